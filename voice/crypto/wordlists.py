"""The SAS word and emoji lists (part of the protocol: changing one changes every SAS).

WORDS: 256 short English words (3 to 7 letters, a-z), sorted, any two differing in at least two
letters (Levenshtein distance >= 2) so a misheard letter does not turn one into another. A
word stands for one byte: ``WORDS[b]``.

EMOJI: 64 emoji, each with the English name to say aloud; the list and its order are those of
the Matrix SAS emoji table (spec "Short Authentication String", sas-emoji.json). An emoji
stands for 6 bits: ``EMOJI[v][0]``. Strings are exact code point sequences (some end in U+FE0F).
"""

from __future__ import annotations

__all__ = ["EMOJI", "WORDS"]

# fmt: off
WORDS: tuple[str, ...] = (
    "acorn", "actor", "adult", "agent", "alarm", "album", "alien", "amber",
    "angel", "ankle", "apple", "april", "arrow", "atlas", "attic", "aunt",
    "award", "axis", "bacon", "badge", "bagel", "baker", "bamboo", "banjo",
    "barn", "basil", "basket", "beaver", "bell", "bench", "berry", "bike",
    "bingo", "bison", "blade", "blanket", "bloom", "board", "bonus", "book",
    "bottle", "boxer", "brain", "brass", "bread", "brick", "bridge", "brush",
    "bucket", "buddy", "bugle", "cabin", "cactus", "camel", "candy", "canoe",
    "canyon", "cargo", "carpet", "castle", "cedar", "chalk", "cheese", "cherry",
    "chess", "chief", "circus", "clam", "cloud", "clover", "cobra", "cocoa",
    "comet", "coral", "cotton", "cowboy", "crab", "crayon", "cricket", "crown",
    "cube", "daisy", "dance", "delta", "denim", "desert", "diary", "doctor",
    "dolphin", "dragon", "drum", "eagle", "easel", "echo", "egg", "elbow",
    "elder", "empire", "engine", "falcon", "farmer", "feather", "fence", "fiddle",
    "flag", "flute", "forest", "fossil", "fox", "frog", "galaxy", "garden",
    "garlic", "gecko", "ghost", "giant", "ginger", "glove", "goat", "gold",
    "grape", "guitar", "hammer", "harbor", "harp", "hazel", "helmet", "hero",
    "hippo", "honey", "hotel", "igloo", "index", "island", "ivory", "jacket",
    "jaguar", "jelly", "judge", "juice", "jungle", "kayak", "kettle", "kiwi",
    "koala", "ladder", "lagoon", "lamp", "lemon", "llama", "lobster", "magnet",
    "mango", "maple", "marble", "meadow", "melon", "mirror", "monkey", "moose",
    "muffin", "napkin", "nectar", "needle", "ninja", "noodle", "nugget", "ocean",
    "olive", "onion", "opera", "orbit", "otter", "oven", "owl", "panda",
    "parrot", "pasta", "peach", "pearl", "pencil", "pepper", "piano", "pickle",
    "pillow", "pilot", "pirate", "pizza", "planet", "plum", "pony", "poppy",
    "potato", "puzzle", "quartz", "quilt", "rabbit", "radar", "radio", "raven",
    "robot", "rocket", "rodeo", "ruby", "saddle", "salad", "salmon", "sandal",
    "satin", "scarf", "shadow", "shark", "sheep", "shovel", "silver", "skunk",
    "sled", "snail", "sofa", "spider", "spoon", "squid", "stamp", "statue",
    "sugar", "summer", "sunset", "swan", "table", "teapot", "temple", "tennis",
    "thunder", "tiger", "toast", "tomato", "tractor", "trumpet", "tulip", "tunnel",
    "turtle", "unicorn", "valley", "velvet", "violin", "volcano", "wagon", "walnut",
    "walrus", "water", "whale", "wizard", "yacht", "yogurt", "zebra", "zipper",
)

EMOJI: tuple[tuple[str, str], ...] = (
    ("\U0001F436", "dog"),  # 0
    ("\U0001F431", "cat"),  # 1
    ("\U0001F981", "lion"),  # 2
    ("\U0001F40E", "horse"),  # 3
    ("\U0001F984", "unicorn"),  # 4
    ("\U0001F437", "pig"),  # 5
    ("\U0001F418", "elephant"),  # 6
    ("\U0001F430", "rabbit"),  # 7
    ("\U0001F43C", "panda"),  # 8
    ("\U0001F413", "rooster"),  # 9
    ("\U0001F427", "penguin"),  # 10
    ("\U0001F422", "turtle"),  # 11
    ("\U0001F41F", "fish"),  # 12
    ("\U0001F419", "octopus"),  # 13
    ("\U0001F98B", "butterfly"),  # 14
    ("\U0001F337", "flower"),  # 15
    ("\U0001F333", "tree"),  # 16
    ("\U0001F335", "cactus"),  # 17
    ("\U0001F344", "mushroom"),  # 18
    ("\U0001F30F", "globe"),  # 19
    ("\U0001F319", "moon"),  # 20
    ("\u2601\uFE0F", "cloud"),  # 21
    ("\U0001F525", "fire"),  # 22
    ("\U0001F34C", "banana"),  # 23
    ("\U0001F34E", "apple"),  # 24
    ("\U0001F353", "strawberry"),  # 25
    ("\U0001F33D", "corn"),  # 26
    ("\U0001F355", "pizza"),  # 27
    ("\U0001F382", "cake"),  # 28
    ("\u2764\uFE0F", "heart"),  # 29
    ("\U0001F600", "smiley"),  # 30
    ("\U0001F916", "robot"),  # 31
    ("\U0001F3A9", "hat"),  # 32
    ("\U0001F453", "glasses"),  # 33
    ("\U0001F527", "spanner"),  # 34
    ("\U0001F385", "santa"),  # 35
    ("\U0001F44D", "thumbs up"),  # 36
    ("\u2602\uFE0F", "umbrella"),  # 37
    ("\u231B", "hourglass"),  # 38
    ("\u23F0", "clock"),  # 39
    ("\U0001F381", "gift"),  # 40
    ("\U0001F4A1", "light bulb"),  # 41
    ("\U0001F4D5", "book"),  # 42
    ("\u270F\uFE0F", "pencil"),  # 43
    ("\U0001F4CE", "paperclip"),  # 44
    ("\u2702\uFE0F", "scissors"),  # 45
    ("\U0001F512", "lock"),  # 46
    ("\U0001F511", "key"),  # 47
    ("\U0001F528", "hammer"),  # 48
    ("\u260E\uFE0F", "telephone"),  # 49
    ("\U0001F3C1", "flag"),  # 50
    ("\U0001F682", "train"),  # 51
    ("\U0001F6B2", "bicycle"),  # 52
    ("\u2708\uFE0F", "aeroplane"),  # 53
    ("\U0001F680", "rocket"),  # 54
    ("\U0001F3C6", "trophy"),  # 55
    ("\u26BD", "ball"),  # 56
    ("\U0001F3B8", "guitar"),  # 57
    ("\U0001F3BA", "trumpet"),  # 58
    ("\U0001F514", "bell"),  # 59
    ("\u2693", "anchor"),  # 60
    ("\U0001F3A7", "headphones"),  # 61
    ("\U0001F4C1", "folder"),  # 62
    ("\U0001F4CC", "pin"),  # 63
)
# fmt: on

assert len(WORDS) == 256 and len(set(WORDS)) == 256
assert len(EMOJI) == 64 and len({e for e, _ in EMOJI}) == 64
