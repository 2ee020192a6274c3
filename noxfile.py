"""Development sessions: `nox -s tests`, `nox -s lint`, `nox -s typecheck`, `nox -s docs`,
`nox -s demo`, `nox -s bench`, `nox -s build`.

Every session runs on the interpreter that runs nox, so a machine with a single
Python (3.11 in CI) runs them all.  Python 3.11 is the oldest the project claims:
it is the one packaged for the CI machine (Debian 12), so the one CI can test.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "docs", "build"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False

PYTHON_PATHS = ("src", "tests", "benchmarks", "examples", "docs", "noxfile.py")


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite with branch coverage."""
    session.install("-e", ".[tests]")
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "combine", "--quiet")
    session.run("coverage", "report")


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff."""
    session.install("ruff==0.17.6")  # pinned: formatting changes between releases
    session.run("ruff", "check", *PYTHON_PATHS)
    session.run("ruff", "format", "--check", *PYTHON_PATHS)


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the package with mypy --strict."""
    session.install("-e", ".[prometheus]", "mypy>=1.8", "types-requests", "types-jsonschema")
    session.run("mypy", "--strict", "src/topchef_worker")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation with Sphinx, warnings as errors, into docs/_build."""
    session.install(".", "sphinx>=7", "myst-parser>=2", "furo")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session
def build(session: nox.Session) -> None:
    """Build the wheel and the sdist into dist/, check them with twine, and install the
    wheel on its own to run its console script and import its test server."""
    session.install("build>=1.0", "twine>=5")
    session.run("python", "-c", "import shutil; shutil.rmtree('dist', ignore_errors=True)")
    session.run("python", "-m", "build", "--outdir", "dist", ".")
    session.run("twine", "check", "--strict", "dist/*")
    wheel = next(iter(__import__("glob").glob("dist/*.whl")), None)
    if wheel is None:  # nox's dry runs (--list) build nothing
        return
    session.install("--force-reinstall", wheel)
    session.run("topchef-worker", "--version")
    session.run("topchef-worker", "demo", "--jobs", "20")  # the wheel alone runs the demo


@nox.session
def demo(session: nox.Session) -> None:
    """Run the demo: the FID service on an embedded server (`nox -s demo -- --jobs 500`)."""
    session.install(".")
    session.run("topchef-worker", "demo", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmark suite; writes benchmarks/results/ and docs/benchmarks.md.

    `nox -s bench -- --quick` for a short smoke run, `-- --only 1,2` for some scenarios.
    """
    session.install(".", "matplotlib")
    session.run("python", "benchmarks/server_rate.py")
    session.run("python", "benchmarks/suite.py", "--docs", *session.posargs)
    results = "benchmarks/results"
    session.run("python", "benchmarks/async_jobs.py", "--json", f"{results}/async_jobs.json")
    session.install(".[dask]")
    session.run("python", "benchmarks/dask_pool.py", "--json", f"{results}/dask_pool.json")
    # Worker processes on one service: one active (targets checked), then shared.
    for name, mode in (
        ("fleet", ["--kill", "--sigterm", "--check"]),
        ("fleet-shared", ["--shared"]),
    ):
        session.run(
            "python",
            "benchmarks/fleet.py",
            *("--workers", "1", "2", "4"),
            *mode,
            *("--json", f"{results}/{name}.json", "--markdown", f"{results}/{name}.md"),
        )
