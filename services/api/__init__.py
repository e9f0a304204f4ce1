"""The main API (port 5000): the service catalog, users, instances and their usage."""

API_PORT = 5000
API_NAME = "api"
API_VERSION = "0.1.0"
