"""The kernels/ folder is the package ``tritonnet.kernels``, never a top-level ``kernels`` (PyPI's ``kernels`` is
Hugging Face's kernel hub): from a checkout, from a copy that is not installed, and from a wheel installed beside
Hugging Face's package."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One training step of alexnet-small at batch 2 through the Triton kernels; prints where tritonnet.kernels lives.
MODEL_STEP = textwrap.dedent("""
    import sys
    import torch
    import tritonnet
    model = tritonnet.models.create_model("alexnet-small", 10)
    loss = tritonnet.functional.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([1, 7]))
    loss.backward()
    assert torch.isfinite(loss) and model.features[0].weight.grad is not None
    assert "kernels" not in sys.modules, "the top-level kernels package was imported"
    print(tritonnet.kernels.__file__)
""")


def _run(code: str, cwd: str, python: str = sys.executable, path: str | None = None) -> str:
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    if path is not None:
        environment["PYTHONPATH"] = path
    done = subprocess.run([python, "-c", code], cwd=cwd, env=environment, capture_output=True, text=True)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return done.stdout.strip().splitlines()[-1]


def test_model_step_from_the_checkout_imports_tritonnet_kernels_only():
    """The repository root on sys.path makes a top-level ``kernels`` importable, so nothing may import it: a second
    copy of every kernel module would keep its own ALGORITHMS and autotune state."""
    assert _run(MODEL_STEP, cwd=ROOT, path=ROOT) == os.path.join(ROOT, "kernels", "__init__.py")


def test_a_checkout_that_is_not_installed_uses_its_own_kernels_folder(tmp_path):
    """A copy of the checkout, run from its root, binds its own ``kernels/``: not an installed wheel's and not an
    editable install of another checkout."""
    for folder in ("tritonnet", "kernels"):
        shutil.copytree(os.path.join(ROOT, folder), tmp_path / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.gz"))
    assert _run(MODEL_STEP, cwd=str(tmp_path)) == str(tmp_path / "kernels" / "__init__.py")


@pytest.mark.slow
def test_wheel_installs_beside_hugging_faces_kernels_package(tmp_path):
    """A throwaway venv (sharing this interpreter's torch and triton) gets this project's wheel and PyPI's
    ``kernels``: ``import kernels`` is Hugging Face's hub, ``tritonnet.kernels`` is ours, and an op runs."""
    shutil.copytree(ROOT, tmp_path / "source", ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "__pycache__", "runs", ".hypothesis", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(tmp_path / "venv")], check=True)
    python = str(tmp_path / "venv" / "bin" / "python")

    def pip(*arguments):
        return subprocess.run([python, "-m", "pip", "install", "--quiet", *arguments], cwd=tmp_path,
                              capture_output=True, text=True)

    done = pip("kernels")
    if done.returncode != 0:
        unreachable = ("NewConnectionError", "Max retries", "Temporary failure in name resolution",
                       "No matching distribution found", "Could not fetch URL", "ProxyError")
        if any(sign in done.stderr for sign in unreachable):
            pytest.skip(f"pip cannot install PyPI's kernels package: {done.stderr.strip().splitlines()[-1]}")
        pytest.fail(f"pip install kernels failed:\n{done.stderr[-4000:]}")
    done = pip("--no-deps", str(tmp_path / "source"))  # an isolated build: the venv's own setuptools may be old
    assert done.returncode == 0, done.stderr[-4000:]

    installed = _run("import os, tritonnet; print(os.path.dirname(tritonnet.__file__))", cwd=str(tmp_path),
                     python=python)
    assert installed.startswith(str(tmp_path / "venv"))
    expected = {os.path.relpath(os.path.join(folder, name), ROOT)
                for folder, _, names in os.walk(os.path.join(ROOT, "tritonnet")) for name in names
                if name.endswith(".py")}
    expected |= {os.path.join("tritonnet", "kernels", name) for name in os.listdir(os.path.join(ROOT, "kernels"))
                 if name.endswith(".py")}
    wheel = {os.path.relpath(os.path.join(folder, name), os.path.dirname(installed))
             for folder, _, names in os.walk(installed) for name in names if name.endswith(".py")}
    assert wheel == expected

    both = textwrap.dedent("""
        import kernels
        import torch
        import tritonnet
        from tritonnet.kernels.conv import conv2d_forward
        assert hasattr(kernels, "get_kernel"), kernels.__file__
        assert "tritonnet" not in kernels.__file__ and tritonnet.kernels.conv.__file__.startswith(
            tritonnet.__path__[0])
        input, weight = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
        output = conv2d_forward(input, weight, None, (1, 1), (0, 0, 0, 0), (1, 1), 1, True)
        torch.testing.assert_close(output, torch.relu(torch.nn.functional.conv2d(input, weight)))
        print("ok")
    """)
    assert _run(both, cwd=str(tmp_path), python=python) == "ok"
