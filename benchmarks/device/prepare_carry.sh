#!/usr/bin/env bash
# Build .carry/: what a bare GPU machine without network needs beside its own PyTorch image to write SynthTalk and
# train the demo there (benchmarks/device/demo_gpu.sh). Run it HERE, on a machine with the package index and
# Debian's archive; the folder travels with the working tree (it is git-ignored) and fits the device tool's 64 MiB
# together with the repository when the two bundled model files stay behind (see benchmarks/device/README.md).
#
#   bash benchmarks/device/prepare_carry.sh            # -> .carry/ (about 55 MB)
#
# Contents:
#   site.tar.xz  a site-packages folder for Python 3.12, manylinux x86_64, of the packages that image lacks, at the
#                versions of this checkout's venv: the wheels unpacked (a wheel is a zip of site-packages; xz
#                packs them tighter than their own zip: PyAV's 36 MB wheel alone becomes 25 MB) and
#                face_recognition_models with dlib's face-recognition ResNet only (what DlibFaceEncoder reads)
#   espeak.tar.xz  libespeak-ng + libsonic from Debian, the espeak-ng data of SynthTalk's languages (en, de, es),
#                and a stand-in libpcaudio (pcaudio_stub.c: no ALSA / PulseAudio there; synchronous synthesis
#                never opens an audio device)
set -euo pipefail
cd "$(dirname "$0")/../.."
CARRY=${CARRY:-.carry}
PYVER=${PYVER:-3.12}  # the device image's Python
PY=${PY:-.venv/bin/python}
rm -rf "$CARRY" && mkdir -p "$CARRY"
work=$(mktemp -d) && trap 'rm -rf "$work"' EXIT

version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
PACKAGES=(diffusers webdataset braceexpand jsonargparse docstring-parser typeshed-client ftfy wcwidth dlib-bin
          soundfile cffi pycparser av)
specs=(); for name in "${PACKAGES[@]}"; do specs+=("$name==$(version "$name")"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp "${PLATFORMS[@]}" \
    -d "$work/wheels" "${specs[@]}"
mkdir -p "$work/site"
for wheel in "$work"/wheels/*.whl; do (cd "$work/site" && python3 -m zipfile -e "$wheel" .); done

models=$("$PY" -c "import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec('face_recognition_models').origin).parent)")
mkdir -p "$work/site/face_recognition_models/models"
cp "$models/__init__.py" "$work/site/face_recognition_models/"
cp "$models/models/dlib_face_recognition_resnet_model_v1.dat" "$work/site/face_recognition_models/models/"
tar -C "$work/site" -cf - . | xz -9 -T0 > "$CARRY/site.tar.xz"

mkdir -p "$work/debs" "$work/espeak/lib" && (cd "$work/debs" && apt-get download libespeak-ng1 espeak-ng-data libsonic0 >/dev/null 2>&1)
for f in "$work"/debs/*.deb; do dpkg -x "$f" "$work/debs/root"; done
lib="$work/debs/root/usr/lib/x86_64-linux-gnu"
cp -a "$lib"/libespeak-ng.so.1* "$lib"/libsonic.so.0* "$work/espeak/lib/"
gcc -shared -fPIC -O2 -Wl,-soname,libpcaudio.so.0 -o "$work/espeak/lib/libpcaudio.so.0" benchmarks/device/pcaudio_stub.c
mkdir -p "$work/espeak/espeak-ng-data"
for item in "$lib"/espeak-ng-data/*; do
  case $(basename "$item") in
    *_dict) case $(basename "$item") in en_dict|de_dict|es_dict) cp -a "$item" "$work/espeak/espeak-ng-data/";; esac;;
    *) cp -a "$item" "$work/espeak/espeak-ng-data/";;
  esac
done
tar -C "$work/espeak" -cf - . | xz -9 -T0 > "$CARRY/espeak.tar.xz"
du -sh "$CARRY" "$CARRY"/*
