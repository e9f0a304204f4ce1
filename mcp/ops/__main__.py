"""``python -m mcp.ops <command>``: the helpers the scripts call (see mcp.ops.commands)."""

import sys

from mcp.ops.commands import main

sys.exit(main(sys.argv[1:]))
