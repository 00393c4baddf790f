"""The local provider's table keyed by an HMAC of the MRN or accession, not by the value.

Rows kept before held 'entity:SOURCE:MRN' and 'item:SOURCE:ACCESSION' as their key: each
becomes its keyed hash with DEID_SECRET (as sendit.apps.main.deidconfig.row_key computes,
copied here so the migration stays as it was written). Not reversible: the raw values are
gone, which is the point.
"""

import hashlib
import hmac
import re

from django.conf import settings
from django.db import migrations

HASHED = re.compile(r"[0-9a-f]{64}")
PREFIX = "sendit.local-identifier:"


def hash_keys(apps, schema_editor):
    LocalIdentifier = apps.get_model("main", "LocalIdentifier")
    secret = settings.DEID_SECRET.encode()
    for row in LocalIdentifier.objects.all().iterator():
        if HASHED.fullmatch(row.key):
            continue
        key = hmac.new(secret, (PREFIX + row.key).encode("utf-8"), hashlib.sha256).hexdigest()
        if LocalIdentifier.objects.filter(key=key).exists():
            row.delete()  # already kept under its hash: the raw copy goes
        else:
            LocalIdentifier.objects.filter(pk=row.pk).update(key=key)


class Migration(migrations.Migration):
    dependencies = [
        ("main", "0002_image_header"),
    ]

    operations = [
        migrations.RunPython(hash_keys, migrations.RunPython.noop),
    ]
