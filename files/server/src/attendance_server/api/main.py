"""The API's one router: every concern's routes, in the order the OpenAPI document lists them."""
from fastapi import APIRouter

from .routes import attendance, employees, health, kiosk

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(kiosk.router)
api_router.include_router(employees.router)
api_router.include_router(attendance.router)
