<#
.SYNOPSIS
  Starts the whisper-api server from .venv with conf\whisper_api.ini (or -Config), or stops it.

.DESCRIPTION
  Run setup.ps1 once first. Without -Log the server runs in this window (Ctrl+C stops it).
  With -Log its output goes to logs\server.log instead, for running hidden at log-on from Task
  Scheduler (see README). -Stop stops the whisper-api server listening on the configured port
  gracefully, as Ctrl+C in its window would, through "python -m whisper_api stop".
    powershell -ExecutionPolicy Bypass -File .\run.ps1
    powershell -ExecutionPolicy Bypass -File .\run.ps1 -Config .\conf\my.ini
    powershell -ExecutionPolicy Bypass -File .\run.ps1 -Stop

.PARAMETER Config
  INI file (default: conf\whisper_api.ini beside this script).
.PARAMETER Log
  Write the server's output to logs\server.log (errors and access log) and logs\server.out.log.
.PARAMETER Stop
  Stop the whisper-api server that listens on the configured port, then exit: new requests get
  503, the running transcription may finish within [server] shutdown_grace_seconds, and this
  waits until the server has exited (the grace period plus 30 seconds at most).
.PARAMETER Force
  With -Stop: end the server at once if it is still running after that wait.
#>
[CmdletBinding()]
param(
    [string]$Config = "",
    [switch]$Log,
    [switch]$Stop,
    [switch]$Force
)

# This file stays ASCII: Windows PowerShell 5.1 reads a .ps1 without a BOM in the ANSI code page.
Set-StrictMode -Version 2.0
$ErrorActionPreference = "Stop"

$ProjectDir = $PSScriptRoot
$VenvPython = Join-Path $ProjectDir ".venv\Scripts\python.exe"
$LogDir = Join-Path $ProjectDir "logs"

if (-not (Test-Path -LiteralPath $VenvPython)) {
    Write-Host ".venv is missing: set up first with" -ForegroundColor Red
    Write-Host "  powershell -ExecutionPolicy Bypass -File .\setup.ps1" -ForegroundColor Yellow
    exit 1
}
if ($Force -and -not $Stop) {
    Write-Host "-Force goes with -Stop: run.ps1 -Stop -Force" -ForegroundColor Red
    exit 2
}
if (-not $Config) { $Config = Join-Path $ProjectDir "conf\whisper_api.ini" }
if (-not (Test-Path -LiteralPath $Config -PathType Leaf)) {
    Write-Host "Config file not found: $Config" -ForegroundColor Red
    exit 2
}
# An absolute path: the server runs with the project folder as its working directory.
$Config = (Resolve-Path -LiteralPath $Config).ProviderPath

if ($Stop) {
    # Asks the server to stop gracefully, as Ctrl+C in its window would (the running transcription
    # may finish within [server] shutdown_grace_seconds), waits for its exit and prints one line;
    # another program on the port is left running (exit code 1).
    $stopOptions = @(if ($Force) { "--force" })
    Push-Location -LiteralPath $ProjectDir
    try {
        & $VenvPython -m whisper_api stop --config $Config @stopOptions
        $code = $LASTEXITCODE
    } finally {
        Pop-Location
    }
    exit $code
}

if ($Log) {
    if (-not (Test-Path -LiteralPath $LogDir)) {
        New-Item -ItemType Directory -Path $LogDir | Out-Null
        # Keeps the logs out of git without touching the repository's ignore rules.
        [System.IO.File]::WriteAllText((Join-Path $LogDir ".gitignore"), "*`n")
    }
    $env:PYTHONIOENCODING = "utf-8"  # Japanese text in the logs, whatever the console code page
    # Start-Process joins its arguments with spaces: quote the path (spaces, Japanese characters).
    $arguments = @("-m", "whisper_api", "--config", ('"' + $Config + '"'))
    $process = Start-Process -FilePath $VenvPython -ArgumentList $arguments -WorkingDirectory $ProjectDir `
        -RedirectStandardError (Join-Path $LogDir "server.log") `
        -RedirectStandardOutput (Join-Path $LogDir "server.out.log") -NoNewWindow -PassThru
    $null = $process.Handle  # keeps the handle so that ExitCode is available after the wait
    $process.WaitForExit()
    exit $process.ExitCode
}

Push-Location -LiteralPath $ProjectDir
try {
    & $VenvPython -m whisper_api --config $Config
    $code = $LASTEXITCODE
} finally {
    Pop-Location
}
exit $code
