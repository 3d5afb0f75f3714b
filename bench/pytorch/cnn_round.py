#!/usr/bin/python3
"""PyTorch's CPU time for McMahan et al.'s MNIST CNN, to compare with fedzip.

The network is nn.ParseNet("cnn"): conv 32x5x5 same, ReLU, max-pool 2,
conv 64x5x5 same, ReLU, max-pool 2, fc 512, ReLU, fc 10 (1,663,370
parameters). Two figures, on torch.set_num_threads(THREADS) (default 2):

  minibatch  one B=10 forward + backward + plain SGD step (ms, best of REPEATS)
  round      one FedAvg round: 10 clients, E=1, B=10, 600 examples each, in
             turn (each minibatch on all threads), FedAvg of the 10 models,
             then evaluation of the 10,000 test images (s, best of ROUNDS)

The data are random MNIST-shaped tensors: a step's cost does not depend on
the pixel values. Usage:

  /usr/bin/python3 bench/pytorch/cnn_round.py [--threads 2] [--rounds 3]

Time the whole process too: `time /usr/bin/python3 bench/pytorch/cnn_round.py`.
"""
import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(64 * 7 * 7, 512)
        self.fc2 = nn.Linear(512, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc2(F.relu(self.fc1(x)))


def local_epoch(model, opt, x, y, batch):
    perm = torch.randperm(len(x))
    for lo in range(0, len(x), batch):
        idx = perm[lo:lo + batch]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="timings of 60 minibatches")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--per-client", type=int, default=600)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--eval-batch", type=int, default=1000)
    ap.add_argument("--skip-eval", action="store_true", help="no separate timing of the evaluation")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    model = CNN()
    print("parameters", sum(p.numel() for p in model.parameters()))
    xs = torch.randn(args.clients * args.per_client, 1, 28, 28)
    ys = torch.randint(0, 10, (len(xs),))
    xt = torch.randn(10000, 1, 28, 28)
    yt = torch.randint(0, 10, (10000,))

    # Minibatch: B=10 forward, backward and SGD step.
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    xb, yb = xs[:args.batch], ys[:args.batch]
    for _ in range(20):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    best, best_cpu = float("inf"), float("inf")
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(60):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
        best = min(best, (time.perf_counter() - t0) / 60)
        best_cpu = min(best_cpu, (time.process_time() - c0) / 60)
    print(f"minibatch B={args.batch} fwd+bwd+SGD: {best * 1e3:.2f} ms, "
          f"CPU {best_cpu * 1e3:.2f} ms all threads (best of {args.repeats} x 60)")

    # Evaluation alone.
    if not args.skip_eval:
        with torch.no_grad():
            t0 = time.perf_counter()
            for lo in range(0, len(xt), args.eval_batch):
                model(xt[lo:lo + args.eval_batch]).argmax(1)
            print(f"evaluation of {len(xt)} images: {time.perf_counter() - t0:.2f} s")

    # Rounds.
    glob = {k: v.clone() for k, v in model.state_dict().items()}
    local = CNN()
    times = []
    for r in range(args.rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        acc = {k: torch.zeros_like(v) for k, v in glob.items()}
        for c in range(args.clients):
            local.load_state_dict(glob)
            opt = torch.optim.SGD(local.parameters(), lr=args.lr)
            lo = c * args.per_client
            local_epoch(local, opt, xs[lo:lo + args.per_client], ys[lo:lo + args.per_client], args.batch)
            for k, v in local.state_dict().items():
                acc[k] += v
        glob = {k: v / args.clients for k, v in acc.items()}
        local.load_state_dict(glob)
        with torch.no_grad():
            correct = 0
            for lo in range(0, len(xt), args.eval_batch):
                hi = lo + args.eval_batch
                correct += (local(xt[lo:hi]).argmax(1) == yt[lo:hi]).sum().item()
        times.append(time.perf_counter() - t0)
        print(f"round {r + 1}: {times[-1]:.2f} s, CPU {time.process_time() - c0:.2f} s all threads")
    if times:
        print(f"round best {min(times):.2f} s, mean {sum(times) / len(times):.2f} s")


if __name__ == "__main__":
    main()
