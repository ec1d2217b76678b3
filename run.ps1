<#
.SYNOPSIS
  Starts the whisper-api server from .venv with conf\whisper_api.ini (or -Config), or stops it.

.DESCRIPTION
  Run setup.ps1 once first. Without -Log the server runs in this window (Ctrl+C stops it).
  With -Log its output goes to logs\server.log instead, for running hidden at log-on from Task
  Scheduler (see README). -Stop ends the whisper-api server listening on the configured port.
    powershell -ExecutionPolicy Bypass -File .\run.ps1
    powershell -ExecutionPolicy Bypass -File .\run.ps1 -Config .\conf\my.ini
    powershell -ExecutionPolicy Bypass -File .\run.ps1 -Stop

.PARAMETER Config
  INI file (default: conf\whisper_api.ini beside this script).
.PARAMETER Log
  Write the server's output to logs\server.log (errors and access log) and logs\server.out.log.
.PARAMETER Stop
  Stop the whisper-api server that listens on the configured port, then exit.
#>
[CmdletBinding()]
param(
    [string]$Config = "",
    [switch]$Log,
    [switch]$Stop
)

# This file stays ASCII: Windows PowerShell 5.1 reads a .ps1 without a BOM in the ANSI code page.
Set-StrictMode -Version 2.0
$ErrorActionPreference = "Stop"

$ProjectDir = $PSScriptRoot
$VenvPython = Join-Path $ProjectDir ".venv\Scripts\python.exe"
$LogDir = Join-Path $ProjectDir "logs"
# Prints the [server] port of the INI in argv[1], read by the server's own settings loader.
$PortProgram = "import sys; from whisper_api.config import load_settings; print(load_settings(sys.argv[1]).server.port)"

if (-not (Test-Path -LiteralPath $VenvPython)) {
    Write-Host ".venv is missing: set up first with" -ForegroundColor Red
    Write-Host "  powershell -ExecutionPolicy Bypass -File .\setup.ps1" -ForegroundColor Yellow
    exit 1
}
if (-not $Config) { $Config = Join-Path $ProjectDir "conf\whisper_api.ini" }
if (-not (Test-Path -LiteralPath $Config -PathType Leaf)) {
    Write-Host "Config file not found: $Config" -ForegroundColor Red
    exit 2
}
# An absolute path: the server runs with the project folder as its working directory.
$Config = (Resolve-Path -LiteralPath $Config).ProviderPath

if ($Stop) {
    Push-Location -LiteralPath $ProjectDir
    try { $port = & $VenvPython -c $PortProgram $Config } finally { Pop-Location }
    if ($LASTEXITCODE -ne 0 -or -not $port) { Write-Host "Could not read the port from $Config" -ForegroundColor Red; exit 2 }
    $port = [int]([string]$port).Trim()
    $listeners = @(Get-NetTCPConnection -LocalPort $port -State Listen -ErrorAction SilentlyContinue |
        Select-Object -ExpandProperty OwningProcess -Unique)
    if ($listeners.Count -eq 0) {
        Write-Host "No server is listening on port $($port): nothing to stop."
        exit 0
    }
    foreach ($processId in $listeners) {
        $process = Get-CimInstance Win32_Process -Filter "ProcessId = $processId"
        if ($process -and ([string]$process.CommandLine) -match "whisper_api") {
            Stop-Process -Id $processId
            Write-Host "Stopped whisper-api (process $processId) on port $port." -ForegroundColor Green
        } else {
            $name = if ($process) { $process.Name } else { "unknown" }
            Write-Host "Port $port belongs to another program ($name, process $processId): left running." -ForegroundColor Yellow
        }
    }
    exit 0
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
