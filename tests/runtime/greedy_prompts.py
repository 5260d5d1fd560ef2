"""The 8 prompts of the greedy-equality tests (unquantized vs transformers, quantized vs unquantized)."""

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three primary colors are",
    "Water boils at a temperature of",
    "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n",
    "List of prime numbers: 2, 3, 5,",
    "In machine learning, a neural network is",
]
