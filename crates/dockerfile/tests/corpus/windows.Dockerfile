# escape=`

FROM mcr.microsoft.com/windows/servercore:ltsc2022 AS build
SHELL ["powershell", "-Command", "$ErrorActionPreference = 'Stop';"]
ENV APP_HOME=C:\app `
    TOOLS=C:\tools
WORKDIR C:\app
COPY build.ps1 C:\app\
RUN Write-Host 'Installing'; `
    New-Item -ItemType Directory -Path C:\tools | Out-Null; `
    # a comment between continuation lines
    .\build.ps1 -Configuration Release

FROM mcr.microsoft.com/windows/nanoserver:ltsc2022
COPY --from=build C:\app\out\ C:\app\
USER ContainerUser
ENTRYPOINT ["C:\\app\\app.exe"]
