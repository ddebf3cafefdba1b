"""The web client: apps/client's static files, the page at GET / and its assets at /client/."""

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

CLIENT_DIR = Path(__file__).resolve().parents[1] / "client"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(CLIENT_DIR / "index.html", media_type="text/html")


def mount_web_client(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/client", StaticFiles(directory=CLIENT_DIR), name="client")
