"""Container healthcheck: exit 0 when this container's service answers GET /health with 200.

Standard library only (slim images have no curl). The port comes from $PORT, as for uvicorn.
"""

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/health"
    # No proxy: a proxy set in the container's environment must not answer for localhost.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=4) as answer:
            status: int = answer.status
    except urllib.error.HTTPError as exc:
        print(f"{url}: {exc.code} {exc.read(2048).decode(errors='replace')}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
