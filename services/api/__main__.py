from services.api.app import run

run()
