import pytest
from pydantic import BaseModel, ValidationError

from edgelm.core.errors import EdgelmError
from edgelm.core.registry import Name, Registry, choices_of


def test_registered_names_validate_and_unknown_ones_name_the_choices():
    colours = Registry("colour")
    colours.register("red", object())

    class Config(BaseModel):
        colour: Name(colours) = "red"

    assert Config(colour="red").colour == "red"
    with pytest.raises(ValidationError, match="unknown colour 'blue'; use one of red"):
        Config(colour="blue")
    colours.register("blue", object())  # registered later: accepted without redefining the config
    assert Config(colour="blue").colour == "blue"
    assert choices_of(Name(colours)) == ("red", "blue")


def test_get_unknown_is_one_line_and_duplicates_are_refused():
    things = Registry("thing")
    first = things.register("a", object())
    assert things.get("a") is first
    with pytest.raises(EdgelmError, match="unknown thing 'b'; use one of a"):
        things.get("b")
    with pytest.raises(ValueError, match="already registered"):
        things.register("a", object())


def test_discover_imports_every_module_of_the_package():
    from edgelm.core.stage import all_stages

    assert {"finetune", "distill", "lowrank", "prune", "quantize", "export", "eval", "bench"} <= set(all_stages())
