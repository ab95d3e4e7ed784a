"""JupyterLab as Binder starts it, for tests/book/test_lab.py and scripts/widget_times_live.py.

``running_lab()`` starts ``jupyter lab`` from the book's environment (``.venv``, which
`make setup` gives the Binder lab pins of .binder/requirements-lab.txt; NOISEGEOM_LAB_VENV
names another) through ``.binder/start`` (one BLAS/torch thread, as on Binder), with the
settings ``.binder/postBuild`` installs (.binder/overrides.json as the app-level overrides,
here in a temporary ``--LabApp.app_settings_dir`` instead of inside the environment), in a
throwaway copy of the working tree (git's tracked and untracked-not-ignored files), on a free
localhost port with a fixed token; and stops it, with its kernels, on leaving.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAB_VENV = Path(os.environ.get("NOISEGEOM_LAB_VENV", ROOT / ".venv"))
TOKEN = "noisegeom-test-lab"


class LabError(RuntimeError):
    """JupyterLab is missing from the environment or did not start."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def throwaway_copy(dest: Path) -> None:
    """The working tree as git sees it (tracked + untracked, not ignored), no .venv/_build."""
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
                         capture_output=True, check=True).stdout.decode()
    for rel in filter(None, out.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def check_environment(venv: Path = LAB_VENV) -> None:
    jupyter = venv / "bin" / "jupyter"
    probe = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import jupyterlab, jupyterlab_myst, jupytext, ipywidgets"],
                           capture_output=True, text=True) if jupyter.exists() else None
    if probe is None or probe.returncode != 0:
        raise LabError(f"no JupyterLab with jupyterlab-myst and jupytext in {venv}: run `make setup` (it "
                       "installs requirements.txt and .binder/requirements-lab.txt into .venv), or set "
                       f"NOISEGEOM_LAB_VENV. {probe.stderr[-500:] if probe else ''}")


@contextlib.contextmanager
def running_lab(venv: Path = LAB_VENV, startup_s: float = 60):
    """Yield {'base', 'work', 'log', 'proc'} of a running JupyterLab; stop it afterwards."""
    check_environment(venv)
    tmp = Path(tempfile.mkdtemp(prefix="noisegeom-lab-"))
    work = tmp / "book"
    throwaway_copy(work)
    settings = tmp / "app-settings"          # what postBuild fills in <prefix>/share/jupyter/lab/settings
    settings.mkdir()
    shutil.copy(work / ".binder" / "overrides.json", settings / "overrides.json")
    # The kernels get their threads from .binder/start, and live widgets, not the build's frames.
    env = {k: v for k, v in os.environ.items()
           if k not in {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NOISEGEOM_WIDGET_FRAMES"}}
    env.update(HOME=str(tmp / "home"), JUPYTER_CONFIG_DIR=str(tmp / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(tmp / "user-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"), PATH=f"{venv / 'bin'}:{env['PATH']}")
    port = free_port()
    cmd = [str(work / ".binder" / "start"), str(venv / "bin" / "jupyter"), "lab", "--no-browser",
           "--allow-root", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={work}",
           f"--LabApp.app_settings_dir={settings}"]
    log_path = tmp / "server.log"
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise LabError(f"jupyter lab exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise LabError(f"jupyter lab did not answer on {base} within {startup_s:.0f} s:\n"
                                   f"{log_path.read_text()[-3000:]}") from None
                time.sleep(0.3)
        yield {"base": base, "work": work, "log": log_path, "proc": proc}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)     # the server and its kernels
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
