"""Server-side state shared by every instance: refresh tokens. One interface, several stores."""
