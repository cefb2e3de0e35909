"""Project configuration: environment, settings, URL routing, the API root, ASGI/WSGI entry."""
