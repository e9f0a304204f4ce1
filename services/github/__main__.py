from mcp.server.app import run
from services.github import SERVICE

run(SERVICE)
