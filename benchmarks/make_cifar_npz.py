"""CIFAR-10's training JPEGs as ONE numpy archive that travels to the lent accelerator (64 MiB).

    python benchmarks/make_cifar_npz.py --src ../shared/data/cifar10-train \
        --out benchmarks/data/cifar10_train_jpeg.npz

The 50,000 pixel arrays are 154 MB (too big to carry); their JPEG files are 47 MB, so the
archive holds the files' bytes as they are: "encoded" uint8 [total], "offsets" int64 [N + 1],
"labels" int32 [N] (classes in sorted folder-name order, files in sorted order: the labels
`folder:` gives). `npz:` sources decode them once with PIL, no TensorFlow. Use the last 500 of
each class as the kNN test set: --config.dataset.train_split='train[:4500]'
--config.dataset.knn_train_split='train[:4500]' --config.dataset.knn_test_split='train[4500:]'.
"""
import argparse
import os

import numpy as np


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--src", required=True, help="<class>/<file>.jpg folder")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    classes = sorted(d for d in os.listdir(a.src) if os.path.isdir(os.path.join(a.src, d)))
    files, labels = [], []
    for label, name in enumerate(classes):
        folder = os.path.join(a.src, name)
        for f in sorted(os.listdir(folder)):
            if f.lower().endswith((".jpg", ".jpeg", ".png")):
                with open(os.path.join(folder, f), "rb") as fh:
                    files.append(np.frombuffer(fh.read(), np.uint8))
                labels.append(label)
    offsets = np.concatenate([[0], np.cumsum([len(f) for f in files])]).astype(np.int64)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    np.savez(a.out, encoded=np.concatenate(files), offsets=offsets,
             labels=np.asarray(labels, np.int32))
    print(f"{a.out}: {len(files)} images, {len(classes)} classes, "
          f"{os.path.getsize(a.out) / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
