"""Texts that break naive code: kept exactly, byte for byte, everywhere they go."""

UNICODE_SAMPLES = [
    "😀🚀👩‍👩‍👧‍👦🏳️‍🌈",  # emoji, ZWJ sequences and variation selectors
    "e\u0301 a\u0308\u0323 \u0915\u094d\u0937",  # combining characters, unnormalised
    "\u202eابجد עברית\u202c mixed",  # right-to-left text and bidi controls
    "nul\x00in\x00the\x00middle\x00",
    "\ufeffBOM \u200b zero-width \u00a0nbsp",
    'tab\tnew\nline\r\nquote"backslash\\',
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𐍈 \U0010fffd",  # astral plane up to the last code point
]
