from mcp.server.app import run
from services.figma import SERVICE

run(SERVICE)
