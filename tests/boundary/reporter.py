"""A Starlette app that reports how it routed each request: the differential test's upstream.

Every endpoint answers JSON with the route Starlette chose, the path it routed on (decoded, as
Starlette routes), the raw path it was sent, the Host it saw and every header. Run with uvicorn.
"""

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


def reporter(name):
    async def endpoint(request):
        return JSONResponse(
            {
                "route": name,
                "path": request.scope["path"],
                "raw_path": request.scope.get("raw_path", b"").decode("latin-1"),
                "host": request.headers.get("host"),
                "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.scope["headers"]],
            }
        )

    return endpoint


app = Starlette(
    routes=[
        Route("/metrics", reporter("metrics")),
        Route("/healthz", reporter("healthz")),
        Route("/public/{rest:path}", reporter("public")),
        Route("/secret", reporter("secret")),
        Route("/secret/{rest:path}", reporter("secret")),
        Route("/{rest:path}", reporter("app"), methods=["GET", "POST", "HEAD", "OPTIONS"]),
    ]
)
