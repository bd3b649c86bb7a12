#!/usr/bin/env bash
# Installs the real peers the tests talk to: DCMTK (second, independent DICOM implementation),
# Prometheus (promtool and the server), Chromium (the status page is tested in a real headless
# browser) and Orthanc with its DICOMweb plugin (a real DICOMweb server). Idempotent: does
# nothing when they are present.
set -euo pipefail
need=()
command -v dcmqrscp >/dev/null 2>&1 || need+=(dcmtk)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# Orthanc with its DICOMweb plugin: the real DICOMweb server of the dicomweb probe's tests
command -v Orthanc >/dev/null 2>&1 || need+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
