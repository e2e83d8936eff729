"""The one exception type the CLI turns into a one-line message and exit code 2."""


class LibraError(Exception):
    """A problem with the user's input (file, field, value) or environment, stated in one line.

    Raise it with a message that names what is wrong and where, e.g.
    ``LibraError("annotations.json: images[3].id: duplicate image id 17")``.
    """
