"""The benchmarks: `python -m studio.bench` (speed: streaming, many writers, training beside
serving), `python -m studio.bench loop --trait REGEX` (does the studio learn what writers rate?),
`python -m studio.bench gate` (can a candidate pass the gate without writing what writers like?),
`python -m studio.bench studios` (how often does a studio rated at random ever promote a version?),
`python -m studio.bench sampling` (how fast does a training run write and score drafts?),
`python -m studio.bench choosing` (how fast does the batch engine choose each draft's next token?),
`python -m studio.bench training` (how fast does it train, in float32 and in bf16?),
`python -m studio.bench learning --trait REGEX` (does a run's trainer alone teach what a writer rated?) and
`python -m studio.bench load` (does the database keep up with a busy studio?).
Each prints its figures and writes one JSON file."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["loop"]:
        from studio.bench.loop import main as loop

        return loop(argv[1:])
    if argv[:1] == ["gate"]:
        from studio.bench.gate import main as gate

        return gate(argv[1:])
    if argv[:1] == ["studios"]:
        from studio.bench.studios import main as studios

        return studios(argv[1:])
    if argv[:1] == ["sampling"]:
        from studio.bench.sampling import main as sampling

        return sampling(argv[1:])
    if argv[:1] == ["choosing"]:
        from studio.bench.choosing import main as choosing

        return choosing(argv[1:])
    if argv[:1] == ["training"]:
        from studio.bench.training import main as training

        return training(argv[1:])
    if argv[:1] == ["learning"]:
        from studio.bench.learning import main as learning

        return learning(argv[1:])
    if argv[:1] == ["load"]:
        from studio.bench.load import main as load

        return load(argv[1:])
    from studio.bench.speed import main as speed

    return speed(argv)
