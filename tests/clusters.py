"""Local Ray clusters in tests: stopping one without touching the machine's others."""

import os


def stop_cluster(temp_dir: str) -> None:
    """Kill the Ray processes of the cluster under `temp_dir` and their workers; other Rays on this machine live on
    (`ray stop` would end every Ray of the machine, a user's or another test's too)."""
    import psutil

    doomed = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.pid != os.getpid() and any(temp_dir in part for part in proc.info["cmdline"] or []):
                doomed += [proc, *proc.children(recursive=True)]
        except psutil.Error:
            pass
    for proc in doomed:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(doomed, timeout=60)
