"""Authorization: which of the requested actions a requester gets."""
