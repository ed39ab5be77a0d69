from __future__ import annotations

from django.apps import AppConfig


class CicdConfig(AppConfig):
    name = "cicd"
    verbose_name = "cicd"
