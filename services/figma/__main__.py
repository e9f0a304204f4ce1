from mcp.app import run
from services.figma import SERVICE

run(SERVICE)
