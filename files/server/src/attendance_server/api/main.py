"""The API's routes, joined in the order the OpenAPI document lists them, each with its body's size limit."""
from fastapi import APIRouter

from ..config import Limits
from .routes import attendance, employee_pages, employees, fleet, health, kiosk, registration


def api_router(limits: Limits) -> APIRouter:
    """Every concern's routes; a request body above its limit is refused with 413 as it is read (the limit is
    a setting, so the router is made per app). Photo uploads (the API's and the employees page's forms) may be
    larger than the rest."""
    router = APIRouter(max_body_size=limits.body_bytes)
    router.include_router(health.router)
    router.include_router(kiosk.router)
    router.include_router(employees.router)
    router.include_router(employees.uploads, max_body_size=limits.upload_bytes)
    router.include_router(attendance.router)
    router.include_router(employee_pages.router)
    router.include_router(employee_pages.uploads, max_body_size=limits.upload_bytes)
    router.include_router(fleet.router)
    router.include_router(registration.router)
    return router
