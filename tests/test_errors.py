"""User mistakes are `LrctlError`s, printed by the CLI as one line with exit status 2; an OSError
on a path the user gave says read or write and the path; anything else is a bug and shows its
traceback. And the retired env id says what replaced it."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from lrctl import cli
from lrctl.cli import main
from lrctl.controller_file import ControllerFileError
from lrctl.errors import (
    ConfigError,
    LrctlError,
    MissingDependencyError,
    UnknownNameError,
    UsageError,
)
from lrctl.tasks import SuiteError, load_suite


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (UsageError, ValueError),
        (ConfigError, ValueError),
        (SuiteError, ValueError),
        (ControllerFileError, ValueError),
        (UnknownNameError, KeyError),
        (MissingDependencyError, ImportError),
    ],
)
def test_user_errors_share_one_base_and_keep_their_builtin(cls: type, builtin: type) -> None:
    assert issubclass(cls, LrctlError) and issubclass(cls, builtin)


def test_unknown_name_reads_as_its_message() -> None:
    suite = load_suite("eval")
    with pytest.raises(UnknownNameError) as info:
        suite.family("nope")
    assert str(info.value) == (
        f"family 'nope' is not in suite 'eval' ({suite.path}); "
        f"it has: {', '.join(suite.family_names)}"
    )


def _info_raising(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    def boom(args) -> None:
        raise exc

    monkeypatch.setattr(cli, "_cmd_info", boom)


@pytest.mark.parametrize(
    "exc",
    [
        UsageError("--seeds must be at least 1, got 0"),
        UnknownNameError("family 'x' is not in suite 'eval'"),
        ConfigError("cfg.json: config field gamma must lie in (0, 1]"),
        MissingDependencyError("this needs the 'ray' package: pip install 'lrctl[ray]'"),
    ],
)
def test_lrctl_error_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, exc: LrctlError
) -> None:
    _info_raising(monkeypatch, exc)
    assert main(["info"]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"lrctl: error: {exc.args[0]}\n" and captured.out == ""


def test_multi_line_message_is_printed_on_one_line(monkeypatch, capsys) -> None:
    _info_raising(monkeypatch, UsageError("first\nsecond"))
    assert main(["info"]) == 2
    assert capsys.readouterr().err == "lrctl: error: first second\n"


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("a bug"),
        KeyError("a bug"),
        ValueError("a bug"),
        TypeError("a bug"),
        FileNotFoundError(errno.ENOENT, "No such file or directory", "/lrctl-internal/x.json"),
    ],
)
def test_any_other_exception_is_a_bug_with_its_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, exc: Exception
) -> None:
    _info_raising(monkeypatch, exc)
    with pytest.raises(type(exc)) as info:
        main(["info", "mine.safetensors"])
    assert info.value is exc
    assert "lrctl: error" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("failed", "verb"),
    [
        ("{given}", "read"),  # the file itself
        ("{given}/inner", "read"),  # something inside it
    ],
)
def test_oserror_on_an_input_path_says_read_and_the_path(
    monkeypatch, capsys, tmp_path: Path, failed: str, verb: str
) -> None:
    given = tmp_path / "ctrl"
    path = failed.format(given=given)
    _info_raising(monkeypatch, PermissionError(errno.EACCES, "Permission denied", path))
    assert main(["info", str(given)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"lrctl: error: cannot {verb} {path}: Permission denied (controller {given}); "
        "check the path\n"
    )


def test_config_that_is_a_folder_cannot_be_read(tmp_path: Path, capsys) -> None:
    assert main(["train", "--config", str(tmp_path), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lrctl: error: cannot read {tmp_path}: Is a directory (--config ")
    assert len(err.splitlines()) == 1 and not (tmp_path / "run").exists()


def test_output_path_under_a_file_cannot_be_written(tmp_path: Path, capsys) -> None:
    """A real write failure on the user's --run-dir: one line that says write and the path."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    run = blocker / "run"
    assert main(["train", "--run-dir", str(run), "--timesteps", "64", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lrctl: error: cannot write {run}: Not a directory (--run-dir {run})")
    assert len(err.splitlines()) == 1


def test_temp_file_beside_an_output_counts_as_the_output(tmp_path: Path) -> None:
    """An atomic write's temp file sits beside the output; an unrelated path is not the user's."""
    out = tmp_path / "plots" / "lr.png"
    args = cli.build_parser().parse_args(["find-lr", "--task", "wine_mlp", "--out", str(out)])
    temp = tmp_path / "plots" / ".lr.png.x1y2.tmp"
    exc = PermissionError(errno.EACCES, "Permission denied", str(temp))
    assert cli._path_error(args, exc) == (
        f"cannot write {temp}: Permission denied (--out {out}); choose another path"
    )
    folder = PermissionError(errno.EACCES, "Permission denied", str(tmp_path))  # on the way
    assert cli._path_error(args, folder).startswith(f"cannot write {tmp_path}: ")
    elsewhere = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "other.png"))
    assert cli._path_error(args, elsewhere) is None


def test_full_disk_is_one_line(monkeypatch, capsys) -> None:
    _info_raising(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    assert main(["info"]) == 2
    assert capsys.readouterr().err == (
        "lrctl: error: No space left on device; free some space and run the command again\n"
    )


@pytest.mark.filterwarnings("ignore:.*out of date:DeprecationWarning")
def test_retired_env_id_names_its_successor() -> None:
    gym = pytest.importorskip("gymnasium")
    import lrctl

    assert lrctl.ENV_ID == "lrctl/LRControl-v1" and lrctl.ENV_ID in gym.registry
    assert "lrctl/LRControl-v0" in gym.registry
    with pytest.raises(gym.error.DeprecatedEnv) as info:
        gym.make("lrctl/LRControl-v0")
    message = str(info.value)
    assert message.startswith("lrctl/LRControl-v0 was the environment with features v1")
    assert message.endswith("use lrctl/LRControl-v1")
