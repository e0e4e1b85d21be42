"""One module per `openocr-det` subcommand: each parses its flags and calls the library below."""
