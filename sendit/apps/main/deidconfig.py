"""Which identifier provider a node uses, and the table that keeps local pseudonyms."""

import hashlib
import hmac
from collections.abc import MutableMapping
from typing import TYPE_CHECKING

from django.conf import settings

from sendit.apps.main.models import LocalIdentifier
from sendit.deid.identifiers import DasherClient, LocalProvider

if TYPE_CHECKING:  # pragma: no cover - the recipe module is imported when a site has a recipe
    from sendit.deid.options import DeidOptions
    from sendit.deid.recipe import Recipe

# Domain of the table's keyed hash, apart from the provider's own (which makes pseudonyms).
ROW_KEY_PREFIX = "sendit.local-identifier:"


def row_key(secret: bytes, key: str) -> str:
    """The table key of a provider key such as 'entity:Stanford MRN:123': an HMAC-SHA256
    with DEID_SECRET, so a copy of the database does not say whose pseudonym a row is.
    (Migration 0003 computes the same for rows kept before.)"""
    return hmac.new(secret, (ROW_KEY_PREFIX + key).encode("utf-8"), hashlib.sha256).hexdigest()


class LocalIdentifierStore(MutableMapping):
    """A dict-like view of the LocalIdentifier table for sendit.deid's LocalProvider.

    The provider's keys hold the raw MRN and accession number; the table holds only their
    keyed hash (row_key). Iterating gives those hashes: they cannot be turned back.
    """

    def __init__(self, secret: bytes):
        self.secret = secret

    def __getitem__(self, key):
        try:
            return LocalIdentifier.objects.get(key=row_key(self.secret, key)).value
        except LocalIdentifier.DoesNotExist:
            raise KeyError(key) from None

    def __setitem__(self, key, value):
        LocalIdentifier.objects.update_or_create(key=row_key(self.secret, key), defaults={"value": value})

    def __delitem__(self, key):
        deleted, _ = LocalIdentifier.objects.filter(key=row_key(self.secret, key)).delete()
        if not deleted:
            raise KeyError(key)

    def __iter__(self):
        return iter(LocalIdentifier.objects.values_list("key", flat=True))

    def __len__(self):
        return LocalIdentifier.objects.count()


def get_provider():
    """DASHER when DEIDENTIFY_RESTFUL is true, else the built-in local provider."""
    if settings.DEIDENTIFY_RESTFUL:
        return DasherClient(
            settings.DASHER_URL,
            study=settings.SOM_STUDY,
            secrets_path=settings.STANFORD_CLIENT_SECRETS or None,
            timeout=settings.DASHER_TIMEOUT,
            retries=settings.DASHER_RETRIES,
            backoff=settings.DASHER_BACKOFF,
        )
    return LocalProvider(
        settings.DEID_SECRET.encode(),
        store=LocalIdentifierStore(settings.DEID_SECRET.encode()),
        jitter_min=settings.LOCAL_JITTER_MIN,
        jitter_max=settings.LOCAL_JITTER_MAX,
    )


def deid_options() -> "DeidOptions":
    """The de-identification options the running settings say (DeidOptions.from_settings)."""
    from sendit import config
    from sendit.deid import DeidOptions

    values = {name: getattr(settings, name) for name in config.names(config.Deid)}
    return DeidOptions.from_settings(values, recipe=site_recipe())


_RECIPES: dict[str, "Recipe"] = {}  # STUDY_DEID -> the recipe it names, parsed


def site_recipe():
    """The site's recipe (STUDY_DEID: a file, or one of deid's shipped recipes by name such
    as ``deid.dicom``), parsed once per process; None for none. Site functions named in
    DEID_FUNCTIONS are registered first, so that ``func:NAME`` finds them."""
    name = settings.STUDY_DEID
    if not name:
        return None
    if name not in _RECIPES:
        from sendit.deid.recipe import Recipe

        _RECIPES[name] = Recipe.load(name, functions=site_functions())
    return _RECIPES[name]


def site_functions() -> dict:
    """``DEID_FUNCTIONS`` (``name=package.module:callable`` entries) as a dict of callables."""
    from importlib import import_module

    from sendit.deid.recipe import RecipeError

    functions = {}
    for entry in settings.DEID_FUNCTIONS:
        name, sep, target = entry.partition("=")
        module_name, colon, attribute = target.partition(":")
        if not (sep and colon and name.strip()):
            raise RecipeError(f"DEID_FUNCTIONS: {entry!r} is not name=package.module:callable")
        try:
            functions[name.strip()] = getattr(import_module(module_name.strip()), attribute.strip())
        except (ImportError, AttributeError) as exc:
            raise RecipeError(f"DEID_FUNCTIONS: {entry!r} cannot be loaded ({type(exc).__name__})") from None
    return functions
