<#
.SYNOPSIS
  Sets up whisper-api in .venv (Python 3.12 or 3.11) and optionally runs the server or the tests.

.DESCRIPTION
  Everything goes into .venv beside this script; deleting .venv removes it all.
  Run without changing the machine's execution policy:
    powershell -ExecutionPolicy Bypass -File .\setup.ps1 -Run
    powershell -ExecutionPolicy Bypass -File .\setup.ps1 -Test

.PARAMETER Run   Start the server afterwards (conf\whisper_api.ini, or -Config).
.PARAMETER Test  Install the test requirements and run the test suite afterwards.
.PARAMETER Cpu   Install without DirectML (plain CPU torch 2.4.1).
.PARAMETER Config INI file for -Run.
#>
[CmdletBinding()]
param(
    [switch]$Run,
    [switch]$Test,
    [switch]$Cpu,
    [string]$Config = ""
)

$ErrorActionPreference = "Stop"
$ProjectDir = $PSScriptRoot
$VenvDir = Join-Path $ProjectDir ".venv"
$VenvPython = Join-Path $VenvDir "Scripts\python.exe"

function Find-Python {
    # torch-directml ships wheels for CPython 3.11 and 3.12 only.
    foreach ($version in @("3.12", "3.11")) {
        try {
            $found = & py "-$version" -c "import sys; print(sys.executable)" 2>$null
            if ($LASTEXITCODE -eq 0 -and $found) { return @("py", "-$version") }
        } catch { }
    }
    Write-Host "Python 3.12 or 3.11 is required (torch-directml has no wheels for 3.13 or newer)." -ForegroundColor Red
    Write-Host "Install it with:  winget install Python.Python.3.12" -ForegroundColor Yellow
    exit 1
}

if (-not (Test-Path $VenvPython)) {
    $python = Find-Python
    Write-Host "Creating .venv with $($python -join ' ') ..."
    & $python[0] $python[1] -m venv $VenvDir
    if ($LASTEXITCODE -ne 0) { throw "venv creation failed" }
} else {
    Write-Host ".venv already exists: reusing it."
}

& $VenvPython -m pip install --quiet --upgrade pip
$requirements = Join-Path $ProjectDir "requirements.txt"
if ($Cpu) {
    # Same pins, without the DirectML package.
    $filtered = Join-Path $VenvDir "requirements-cpu.txt"
    Get-Content $requirements | Where-Object { $_ -notmatch "^torch-directml" } | Set-Content -Encoding UTF8 $filtered
    $requirements = $filtered
}
Write-Host "Installing requirements (first run downloads about 1 GB) ..."
& $VenvPython -m pip install --quiet -r $requirements
if ($LASTEXITCODE -ne 0) { throw "pip install failed" }
if ($Test) {
    & $VenvPython -m pip install --quiet -r (Join-Path $ProjectDir "requirements-dev.txt")
    if ($LASTEXITCODE -ne 0) { throw "pip install of the test requirements failed" }
}
Write-Host "Set-up done: $VenvDir" -ForegroundColor Green

if ($Test) {
    Push-Location $ProjectDir
    try { & $VenvPython -m pytest -q; exit $LASTEXITCODE } finally { Pop-Location }
}
if ($Run) {
    Push-Location $ProjectDir
    try {
        if ($Config) { & $VenvPython -m whisper_api --config $Config } else { & $VenvPython -m whisper_api }
        exit $LASTEXITCODE
    } finally { Pop-Location }
}
