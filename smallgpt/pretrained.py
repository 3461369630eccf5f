"""A model that already exists: where ``train.init_from`` and ``eval.checkpoint`` find one, and how a run starts from it.

A source (:func:`load_source`) is

* a run directory or checkpoint of this project: its weights, its shape and its tokenizer (the rank
  file that sits beside the checkpoint);
* a Hugging Face GPT-2 directory (hf.py reads it), or one of OpenAI's sizes by name, looked up in the
  local Hugging Face cache: GPT-2's weights, which need GPT-2's tokenizer, tiktoken's r50k_base.  It is
  read from the directory's own vocab.json when there is one (GPT-2's ids are its ranks; checked
  against tiktoken's published file, so no download is needed), else it is tiktoken's 'gpt2' by name,
  or a local r50k_base.tiktoken given as data.tokenizer, checked by its sha256.

A run that starts from one (:class:`Start`) fine-tunes it as nanoGPT's ``init_from`` and litgpt's
fine-tuning do: the source's weights and shape, a fresh optimizer and schedule, a new run directory.
Its text is prepared with the model's own tokenizer: ``data.tokenizer`` left at 'bpe' (the default)
means exactly that, and any other tokenizer is refused, because token ids mean nothing to a model
trained on another vocabulary.  Of ``[model]``, only what was given (in the TOML file or on the
command line) is compared with the source: a smaller ``block_size`` crops the position table (as
nanoGPT's ``crop_block_size``), ``dropout`` and ``vocab_multiple`` (the vocabulary's padding rows, which no
token uses) are the run's own, and any other difference is refused.
"""
from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import tiktoken
import torch

from smallgpt import hf
from smallgpt import tokenizer as tok
from smallgpt.checkpoint import find_checkpoint, load_checkpoint, model_from_checkpoint
from smallgpt.config import Config
from smallgpt.errors import UserError
from smallgpt.safefiles import atomic_write
from model import GPT, GPTConfig, fit_vocab_rows
from smallgpt.dataset import Dataset, dataset_dir, downloads_dir

GPT2_TOKENIZER = "gpt2"
FREE = ("dropout", "vocab_multiple")  # [model] settings that are the run's own, whatever the source had
INIT_ONLY = ("vocab_size", "zero_init_proj")  # settings that mean nothing for weights that exist


@dataclass
class Source:
    """A trained model: where it is, its shape, its tokenizer and (loaded on demand) its weights."""
    path: Path  # the checkpoint file, or the Hugging Face directory
    config: GPTConfig  # its shape, vocab_size included
    tokenizer: dict | None  # a run's tokenizer spec (tokenizer.py); None for GPT-2, which needs tiktoken's 'gpt2'
    _weights: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def is_gpt2(self) -> bool:
        return self.tokenizer is None

    @property
    def tokenizer_name(self) -> str:
        return "GPT-2's (tiktoken 'gpt2')" if self.is_gpt2 else repr(self.tokenizer["name"])

    def weights(self) -> dict[str, torch.Tensor]:
        """The weights under model.GPT's names."""
        if self._weights is None:
            self._weights = hf.read_gpt2(self.path)[1]
        return self._weights

    def model(self, device: str | torch.device = "cpu") -> GPT:
        """The model itself, in eval mode."""
        model = GPT(self.config)
        model.load_state_dict(self.weights())
        return model.to(device).eval()

    # ---- the tokenizer

    def identity(self) -> str:
        """tokenizer.identity of the model's tokenizer."""
        return tok.KNOWN["r50k_base"][0] if self.is_gpt2 else tok.spec_identity(self.tokenizer, self.path.parent)

    def gpt2_ranks(self) -> dict[bytes, int] | None:
        """GPT-2's ranks from the directory's own vocab.json, checked against tiktoken's published
        r50k_base, so a GPT-2 from the Hugging Face cache needs no tokenizer download; None without one."""
        ranks = hf.vocab_json_ranks(self.path)
        if ranks is not None and hashlib.sha256(tok.rank_file_bytes(ranks)).hexdigest() != self.identity():
            raise UserError(f"{self.path}/vocab.json is not GPT-2's tokenizer (tiktoken's r50k_base); this project "
                            "reads GPT-2 models with GPT-2's own tokenizer only")
        return ranks

    def own_tokenizer(self) -> str:
        """The data.tokenizer setting that prepares text the way this model reads it."""
        if self.is_gpt2:
            return GPT2_TOKENIZER
        spec = self.tokenizer
        return str(self.path.parent / spec["file"]) if spec["kind"] in ("bpe", "file") else spec["name"]

    def tokenizer_setting(self, asked: str, key: str = "data.tokenizer", rank_dir: Path | None = None) -> str:
        """The data.tokenizer to use for text this model reads: 'bpe' (the default) becomes the model's
        own (for a GPT-2 with a vocab.json, its ranks written to ``rank_dir``); anything else must be
        that same tokenizer, however spelled."""
        if asked == "bpe":
            ranks = self.gpt2_ranks() if self.is_gpt2 and rank_dir is not None else None
            return self.own_tokenizer() if ranks is None else str(write_ranks(ranks, rank_dir / "r50k_base.tiktoken"))
        if tok.identity(asked) != self.identity():
            raise UserError(f"--{key}={asked} is not the tokenizer of {self.path}, which reads {self.tokenizer_name} "
                            f"tokens; leave {key} unset to use the model's own tokenizer")
        return asked

    def encoding(self, asked: str, key: str = "data.tokenizer") -> tiktoken.Encoding:
        """The model's tokenizer (``asked`` checked as :meth:`tokenizer_setting` does)."""
        setting = self.tokenizer_setting(asked, key)
        if not self.is_gpt2:
            return tok.load_tokenizer(self.tokenizer, self.path.parent)
        ranks = self.gpt2_ranks() if asked == "bpe" else None
        if ranks is not None:
            _, pat_str, eot_id = tok.KNOWN["r50k_base"]
            return tiktoken.Encoding("r50k_base", pat_str=pat_str, mergeable_ranks=ranks, special_tokens={tok.EOT: eot_id})
        if tok.tokenizer_kind(setting) != "file":
            return tok.get_named_encoding(setting)
        with tempfile.TemporaryDirectory() as d:  # a local r50k_base.tiktoken: checked and parsed as prepare.py does
            return tok.load_tokenizer(tok.file_spec(Path(setting).expanduser(), Path(d)), Path(d))

    def check_dataset(self, ds: Dataset) -> None:
        """Refuse a dataset whose tokens are not this model's."""
        spec = ds.meta["tokenizer"]
        if tok.spec_identity(spec, ds.dir) != self.identity():
            raise UserError(f"the dataset {ds.dir} was prepared with tokenizer {spec['name']!r}, but {self.path} reads "
                            f"{self.tokenizer_name} tokens; leave data.tokenizer unset and give another --data.dir "
                            "to prepare the text with the model's tokenizer")
        if ds.vocab_size > self.config.vocab_size:
            raise UserError(f"the dataset {ds.dir} has {ds.vocab_size} tokens, more than the {self.config.vocab_size} "
                            f"of {self.path}")

    # ---- the shape of a run that fine-tunes it

    def finetune_config(self, asked: GPTConfig, given: set[str]) -> GPTConfig:
        """The source's shape with the run's dropout and, if asked, a smaller context; any other [model]
        setting that was given and differs from the source is refused."""
        src = self.config
        changes = {name: getattr(asked, name) for name in FREE}
        for f in dataclasses.fields(GPTConfig):
            name = f.name
            want, have = getattr(asked, name), getattr(src, name)
            if f"model.{name}" not in given or name in FREE + INIT_ONLY or want == have:
                continue
            if name == "block_size":
                if want < have:
                    changes[name] = want
                    continue
                raise UserError(f"model.block_size = {want} is larger than the context of {self.path} ({have}); "
                                "a fine-tuned model's context can only shrink (its position table is cropped)")
            raise UserError(f"model.{name} = {want!r} contradicts {self.path}, whose {name} is {have!r}: fine-tuning "
                            "keeps the model's shape (only a smaller model.block_size, model.dropout and "
                            "model.vocab_multiple may change); "
                            f"remove model.{name} from the settings")
        return dataclasses.replace(src, **changes)


def write_ranks(ranks: dict[bytes, int], path: Path) -> Path:
    """A rank file, written (atomically) unless it is there already."""
    data = tok.rank_file_bytes(ranks)
    if not (path.is_file() and path.read_bytes() == data):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)
    return path


def load_source(arg: str, key: str) -> Source:
    """The model ``arg`` names: a run directory or checkpoint file of this project, a Hugging Face GPT-2
    directory, or one of GPT-2's sizes by name (from the local Hugging Face cache only)."""
    path = Path(arg).expanduser()
    if path.is_file() and (path.name == "config.json" or path.name in hf.WEIGHT_FILES):
        path = path.parent  # a file of a Hugging Face directory: the directory
    if hf.is_hf_dir(path):
        return Source(path, hf.gpt2_config(hf.read_config(path), str(path)), None)
    if path.exists():
        ckpt_path = find_checkpoint(path)
        ckpt = load_checkpoint(ckpt_path)
        model = model_from_checkpoint(ckpt)
        return Source(ckpt_path, model.config, ckpt["tokenizer"], model.state_dict())
    if arg in hf.GPT2_SIZES:
        snapshot = hf.resolve_gpt2(arg, key)
        return Source(snapshot, hf.gpt2_config(hf.read_config(snapshot), str(snapshot)), None)
    raise UserError(f"--{key}={arg}: no such file or directory; give a run directory or checkpoint of this project, "
                    f"a Hugging Face GPT-2 directory, or one of {', '.join(hf.GPT2_SIZES)}")


class Start:
    """How a run begins: from scratch (``train.init_from`` empty), or from a trained model.

    ``cfg`` is the run's configuration with the source's shape and tokenizer filled in (what the run
    directory keeps); :meth:`model_config` is the model to build once the dataset is open, and
    :meth:`weights` what to load into it.  On a resume the run's own checkpoint supplies the weights.
    """

    def __init__(self, cfg: Config):
        self.cfg, self.source = cfg, None
        t = cfg.train
        if not t.init_from:
            return
        self.source = load_source(t.init_from, "train.init_from")  # (train.check_out_dir refused its own directory)
        data = dataclasses.replace(cfg.data, tokenizer=self.source.tokenizer_setting(
            cfg.data.tokenizer, rank_dir=downloads_dir(cfg.data)))
        if not data.dir and tok.tokenizer_kind(data.tokenizer) == "file":
            # rank files of different runs share a name: the dataset's directory names the file's content
            data.dir = f"{dataset_dir(data)}-{tok.identity(data.tokenizer)[:8]}"
        model = self.source.finetune_config(cfg.model, cfg.given)
        self.cfg = dataclasses.replace(cfg, data=data, model=model)

    def model_config(self, ds: Dataset) -> GPTConfig:
        """The model this run trains: the source's (whose tokenizer the dataset must have), or [model]
        with the dataset's vocabulary."""
        if self.source is None:
            return GPTConfig(**{**dataclasses.asdict(self.cfg.model), "vocab_size": ds.vocab_size})
        self.source.check_dataset(ds)
        return self.cfg.model

    def weights(self) -> dict[str, torch.Tensor] | None:
        """The source's weights for this run's shape (a learned position table cropped to its block_size, the
        vocabulary's padding rows to its model.vocab_multiple); None from scratch."""
        if self.source is None:
            return None
        sd = fit_vocab_rows(self.source.weights(), self.cfg.model.padded_vocab)
        if "transformer.wpe.weight" in sd:
            sd = {**sd, "transformer.wpe.weight": sd["transformer.wpe.weight"][:self.cfg.model.block_size]}
        return sd
