"""The HTTP API: its dependencies (`deps`), its routes per concern (`routes`), and the router that joins them
(`main`). The app itself is built by `attendance_server.app.create_app`."""
