"""The API's routes, one module per concern: the server's health, the kiosks' API, employees and their
enrollment, the attendance list and page, the kiosks' state (list and metrics)."""
