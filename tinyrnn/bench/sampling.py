"""Batch-1 sampling speed: tinyrnn's generation kernel against a PyTorch loop."""
import statistics
import time

from .configs import VOCAB


SAMPLING_BLOCKS = 5     # timed blocks of ``length`` characters a worker runs; it reports their median


def tinyrnn_sampling_rate(cfg, length: int, weights: str = "f32") -> float:
    """Batch-1 generation through the fused generation kernel (what `tinyrnn sample` runs), with the
    weight matrices in ``weights`` format (f32, bf16 or int8): the median chars/s of SAMPLING_BLOCKS
    blocks of ``length`` characters. (One block of 3,000 characters takes ~45 ms at b in int8: over
    10 workers on the Intel VM one block's rate spread over 53-73K chars/s, the median of 5 over
    60-72K.)"""
    from tinyrnn import manual_seed
    from tinyrnn.generate import sample_indices
    from tinyrnn.models import CharRNN

    manual_seed(0)
    model = CharRNN(VOCAB, cell=cfg["cell"], hidden=cfg["hidden"], layers=cfg["layers"], embed=cfg["hidden"])
    model.eval()
    for _ in sample_indices(model, [0], 10, temperature=1.0, seed=0, weights=weights):  # compile / warm up
        pass
    rates = []
    for block in range(SAMPLING_BLOCKS):
        t0 = time.perf_counter()
        n = sum(len(chunk) for chunk in sample_indices(model, [0], length, temperature=1.0, seed=block,
                                                       weights=weights))
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def torch_sampling_rate(cfg, length: int) -> float:
    import torch

    torch.manual_seed(0)
    H = cfg["hidden"]
    embed = torch.nn.Embedding(VOCAB, H)
    rnn = torch.nn.LSTM(H, H, num_layers=cfg["layers"])
    head = torch.nn.Linear(H, VOCAB)

    def run(n):
        with torch.no_grad():
            idx, state = torch.zeros((1, 1), dtype=torch.long), None
            for _ in range(n):
                out, state = rnn(embed(idx), state)
                probs = torch.softmax(head(out[-1]), dim=-1)
                idx = torch.multinomial(probs, 1)

    run(10)
    t0 = time.perf_counter()
    run(length)
    return length / (time.perf_counter() - t0)
