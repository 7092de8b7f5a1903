"""``python -m workers.webrtc``: run the WebRTC SFU worker."""

import sys

from .cli import main

sys.exit(main())
