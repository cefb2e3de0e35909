from django.contrib import admin

from moorage.audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("at", "account", "actor_label", "action", "target_type", "target_id")
    list_filter = ("action",)
    search_fields = ("actor_label", "target_id")

    def has_add_permission(self, request: object) -> bool:  # the trail is written by services
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False
