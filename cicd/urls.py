from __future__ import annotations

from django.contrib import admin
from django.urls import path

from cicd import views

admin.site.site_header = "cicd administration"
admin.site.site_title = "cicd"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
]
