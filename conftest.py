"""Repository-wide pytest set-up: the fixture plugins every test package can use."""

pytest_plugins = [
    "moorage.testing.fixtures",
    "moorage.testing.django_fixtures",
    "moorage.testing.sealed",
]
