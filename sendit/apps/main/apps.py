from django.apps import AppConfig
from django.core import checks


class MainConfig(AppConfig):
    name = "sendit.apps.main"
    label = "main"
    verbose_name = "Sendit"

    def ready(self):
        checks.register(check_recipe, checks.Tags.compatibility)
        from celery.signals import worker_init

        worker_init.connect(_recipe_at_worker_start, weak=False)


def check_recipe(app_configs=None, **kwargs) -> list:
    """``manage.py check`` (and the start of every management command, the watcher's
    included): a broken STUDY_DEID recipe stops the start with its file and line."""
    from sendit.apps.main.deidconfig import site_recipe
    from sendit.deid.recipe import RecipeError

    try:
        recipe = site_recipe()
    except RecipeError as exc:
        return [checks.Error(f"STUDY_DEID: {exc}", id="sendit.E101")]
    if recipe is None:
        return []
    return [checks.Warning(message, id="sendit.W101") for message in recipe.warnings]


def _recipe_at_worker_start(**kwargs) -> None:
    """A worker does not start on a recipe that does not load (SystemExit: Celery logs and
    swallows the exceptions of signal handlers, not this)."""
    for problem in check_recipe():
        if problem.is_serious():
            raise SystemExit(f"sendit worker not started: {problem.msg}")
