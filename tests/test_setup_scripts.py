"""The set-up scripts, READMEs, CI workflow and .ci/run agree; the Python the scripts embed works.

PowerShell is not available everywhere the tests run, so the .ps1 files are checked statically
here and run for real by the windows-latest CI job.
"""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.model  # child processes, model conversion or speech synthesis: not pure logic

REPOSITORY = Path(__file__).resolve().parents[1]
README = REPOSITORY / "README.md"
README_JA = REPOSITORY / "README.ja.md"
SETUP = REPOSITORY / "setup.ps1"
RUN = REPOSITORY / "run.ps1"
WORKFLOW = REPOSITORY / ".github" / "workflows" / "tests.yml"
LINUX_TEST_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -q -r requirements-dev.txt"
    " && .venv/bin/python -m whisper_api download --speakers && .venv/bin/python -m pytest -q -rs"
)
WINDOWS_TEST_COMMAND = r"powershell -ExecutionPolicy Bypass -File .\setup.ps1 -Test -Cpu"


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def code_lines(markdown: str) -> list[str]:
    """Lines inside fenced code blocks, without comment lines (those are translated)."""
    lines = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", markdown, re.S):
        lines += [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return lines


def powershell_string(script: Path, variable: str) -> str:
    """The value of `$variable = "..."` (one line) in a .ps1 file."""
    match = re.search(rf'^\${variable} = "(.*)"$', text(script), re.M)
    assert match, f"${variable} not found in {script.name}"
    return match.group(1)


def test_readme_linux_test_command_is_what_ci_and_the_workflow_run():
    assert LINUX_TEST_COMMAND in text(README)
    assert LINUX_TEST_COMMAND in text(REPOSITORY / ".ci" / "run").splitlines()
    assert f"run: {LINUX_TEST_COMMAND}" in text(WORKFLOW)


def test_readme_windows_test_command_is_what_the_workflow_runs():
    assert WINDOWS_TEST_COMMAND in text(README)
    assert f"run: {WINDOWS_TEST_COMMAND}" in text(WORKFLOW)
    assert "runs-on: windows-latest" in text(WORKFLOW) and "runs-on: ubuntu-latest" in text(WORKFLOW)
    assert text(WORKFLOW).count('python-version: "3.12"') == 2


def test_readme_quick_start_keeps_both_windows_commands():
    for command in (r"powershell -ExecutionPolicy Bypass -File .\setup.ps1 -Run",
                    r"powershell -ExecutionPolicy Bypass -File .\setup.ps1 -Test"):
        assert command in text(README) and command in text(README_JA)


def test_japanese_readme_has_the_same_commands_and_sections():
    english, japanese = text(README), text(README_JA)
    assert code_lines(japanese) == code_lines(english)
    assert len(re.findall(r"^## ", japanese, re.M)) == len(re.findall(r"^## ", english, re.M))
    assert len(re.findall(r"^\|", japanese, re.M)) == len(re.findall(r"^\|", english, re.M))  # table rows


@pytest.mark.parametrize("readme", [README, README_JA], ids=["en", "ja"])
def test_every_ini_key_is_in_the_configuration_reference(readme):
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(REPOSITORY / "conf" / "whisper_api.ini", encoding="utf-8")
    rows = re.findall(r"^\| *([\w:]+) *\| *([^|]+?) *\|", text(readme), re.M)
    documented = {(section.split(":")[0], key) for section, keys in rows for key in re.split(r"[,、] *", keys)}
    for section in parser.sections():
        for key in parser.options(section):
            assert (section.split(":")[0], key) in documented, f"[{section}] {key} is missing from {readme.name}"


@pytest.mark.parametrize("script", [SETUP, RUN], ids=lambda path: path.name)
def test_scripts_are_ascii_for_windows_powershell(script):
    """Windows PowerShell 5.1 reads a .ps1 without a BOM in the ANSI code page."""
    script.read_bytes().decode("ascii")


@pytest.mark.parametrize(
    ("script", "switches"),
    [(SETUP, ("Run", "Test", "Cpu", "Model", "Config")), (RUN, ("Config", "Log", "Stop", "Force"))],
    ids=["setup.ps1", "run.ps1"],
)
def test_script_parameters_are_documented(script, switches):
    parameters = re.search(r"param\((.*?)\n\)", text(script), re.S).group(1)
    for switch in switches:
        assert re.search(rf"\${switch}\b", parameters), f"{script.name} has no -{switch}"
        assert f".PARAMETER {switch}" in text(script)
        assert f"-{switch}" in text(README) and f"-{switch}" in text(README_JA)


def test_scripts_build_every_path_from_their_own_folder():
    for script in (SETUP, RUN):
        assert "$ProjectDir = $PSScriptRoot" in text(script)
        assert "Set-Location" not in text(script)


def test_embedded_programs_are_literal_in_powershell():
    """`$` or a backtick inside a double-quoted PowerShell string would be expanded."""
    program = powershell_string(SETUP, "ProbeProgram")
    assert "$" not in program and "`" not in program and '"' not in program


def test_python_probe_prints_version_bits_and_path():
    program = powershell_string(SETUP, "ProbeProgram")
    output = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True).stdout
    version, bits, path = output.strip().split(" ", 2)
    assert version == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert bits == "64" and Path(path) == Path(sys.executable)


def test_run_stop_is_the_graceful_stop_command_not_a_kill():
    """-Stop runs `python -m whisper_api stop` with the script's INI (tests/test_shutdown.py stops a
    real server with it: the running transcription finishes); Stop-Process would end the server
    with no grace period, and -Force asks the command for that explicitly."""
    script = text(RUN)
    stop_block = re.search(r"^if \(\$Stop\) \{\n(.*?)^\}", script, re.S | re.M).group(1)
    assert "& $VenvPython -m whisper_api stop --config $Config @stopOptions" in stop_block
    assert '$stopOptions = @(if ($Force) { "--force" })' in stop_block
    assert "exit $code" in stop_block
    assert "Stop-Process" not in script and "Get-NetTCPConnection" not in script


def test_setup_model_option_uses_the_download_command():
    """One download path on every platform: tests/test_model_source.py runs the command for real."""
    assert "& $VenvPython -m whisper_api download $Model" in text(SETUP)
