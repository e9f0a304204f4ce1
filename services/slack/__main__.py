from mcp.app import run
from services.slack import SERVICE

run(SERVICE)
