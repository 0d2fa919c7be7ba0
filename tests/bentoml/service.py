"""A tiny Bento service with no model: the real `bentoml serve` behind a bentogate route."""

import bentoml


@bentoml.service
class Echo:
    @bentoml.api
    def echo(self, text: str) -> str:
        return text
