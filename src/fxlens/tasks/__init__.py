"""Tasks compose the layers below (audio, fx, data, models) into what a user asks for; the CLI calls them."""
