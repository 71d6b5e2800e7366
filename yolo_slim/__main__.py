"""``python -m yolo_slim <command> [hydra overrides]``."""

from yolo_slim.cli import main

if __name__ == "__main__":
    main()
