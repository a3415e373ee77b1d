"""Any bytes a user puts in a recipe file, any YAML document, any --set value: a valid recipe or
one `ganstop: error:` line with exit 2, never a traceback, and nothing run or written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import invoke
from ganstop import recipe as rc

SECTIONS = rc.SECTIONS
KEYS = sorted({key for section, keys in rc.Recipe().to_dict().items() if section != "search" for key in keys})
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["auto", "fid", "ring8", "cosine", "1e-3", "patience,trend"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                           max_size=3), max_leaves=6)
documents = st.one_of(
    values,
    st.dictionaries(st.sampled_from(SECTIONS) | st.text(max_size=8),
                    st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), values, max_size=4) | values,
                    max_size=4),
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def loads_or_refuses(path: Path, capsys) -> None:
    try:
        rc.load(path)
        return  # a valid recipe: running it is the other tests' business
    except rc.RecipeError as exc:
        assert "\n" not in str(exc)
    with tempfile.TemporaryDirectory() as workdir:  # the CLI says it in one line and writes nothing
        cwd = os.getcwd()
        os.chdir(workdir)
        try:
            code, out, err = invoke(["train", "--recipe", str(path)], capsys)
            assert code == 2 and err.startswith("ganstop: error: ") and err.count("\n") == 1, err
            assert os.listdir(workdir) == []
        finally:
            os.chdir(cwd)


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes(capsys, data):
    with tempfile.NamedTemporaryFile(suffix=".yaml", delete=False) as fh:
        fh.write(data)
    try:
        loads_or_refuses(Path(fh.name), capsys)
    finally:
        os.unlink(fh.name)


@FUZZ
@given(documents)
def test_arbitrary_yaml_documents(capsys, document):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        yaml.safe_dump(document, fh)
    try:
        loads_or_refuses(Path(fh.name), capsys)
    finally:
        os.unlink(fh.name)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([f"{s}.{k}" for s in SECTIONS for k in KEYS]) | st.text(max_size=20),
       st.text(max_size=20))
def test_arbitrary_set_values(key, raw):
    try:
        rc.load(None, [rc.parse_override(f"{key}={raw}")])
    except rc.RecipeError as exc:
        assert "\n" not in str(exc)
