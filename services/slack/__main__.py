from mcp.server.app import run
from services.slack import SERVICE

run(SERVICE)
