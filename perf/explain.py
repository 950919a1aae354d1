"""What a rerun of the Explain page costs (one image, fmnist-cnn, forgetting Trouser, Integrated Gradients and Layer
Grad-CAM shown): seconds to add Saliency, to rerun with nothing new, then to add Occlusion (AppTest wall time).

    .venv/bin/python perf/explain.py ROOT      # ROOT: this checkout, or a baseline `git worktree`, each in its own process
"""

from __future__ import annotations

import sys
import time


def main(root: str) -> None:
    sys.path.insert(0, root)  # the checkout under test, before the installed one
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(f"{root}/wfexplain_dashboard/app.py", default_timeout=600)
    at.query_params["forget"] = "1"
    at.run()
    at.switch_page("views/explain.py").run()
    methods = ["Integrated Gradients", "Layer Grad-CAM"]
    times = []
    for added in ("Saliency", None, "Occlusion"):
        if added:
            methods.append(added)
            at.multiselect(key="explain_methods").set_value(list(methods))
        start = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - start)
        assert not at.exception, at.exception
    print(" ".join(f"{t:.2f}" for t in times))


if __name__ == "__main__":
    main(sys.argv[1])
