"""A small sample repository (Python back end, TypeScript front end) for the demo and tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

_PY_MODULES: dict[str, str] = {
    "shop/__init__.py": '"""Sample shop back end."""\n',
    "shop/config.py": "import os\n\nDEBUG = os.environ.get('DEBUG') == '1'\n",
    "shop/db/__init__.py": "from shop.db.session import Session\n",
    "shop/db/session.py": "from shop import config\n\n\nclass Session:\n    debug = config.DEBUG\n",
    "shop/db/models.py": "from .session import Session\n\n\nclass Base:\n    session = Session\n",
    "shop/models/__init__.py": "",
    "shop/models/user.py": "from shop.db.models import Base\n\n\nclass User(Base):\n    pass\n",
    "shop/models/product.py": (
        "from shop.db.models import Base\n\n\nclass Product(Base):\n    pass\n"
    ),
    "shop/models/order.py": (
        "from shop.db.models import Base\nfrom shop.models.product import Product\n"
        "from shop.models.user import User\n\n\nclass Order(Base):\n    items: list[Product]\n"
        "    user: User\n"
    ),
    "shop/services/__init__.py": "",
    "shop/services/pricing.py": (
        "from decimal import Decimal\n\nfrom ..models.product import Product\n\n\n"
        "def price(p: Product) -> Decimal:\n    return Decimal(0)\n"
    ),
    "shop/services/orders.py": (
        "from shop.models import order, user\nfrom shop.services import pricing\n"
        "from shop.db import Session\n"
    ),
    "shop/services/auth.py": "import hashlib\n\nfrom shop.models.user import User\n",
    "shop/services/mail.py": "import smtplib\n\nfrom shop import config\n",
    "shop/api/__init__.py": "",
    "shop/api/routes.py": (
        "from shop.api import handlers\nfrom shop.services.auth import User\n"
        "from . import schemas\n"
    ),
    "shop/api/handlers.py": (
        "from shop.services import orders, pricing, mail\nfrom .schemas import OrderIn\n"
    ),
    "shop/api/schemas.py": "from dataclasses import dataclass\n\n\n@dataclass\nclass OrderIn:\n"
    "    product_id: int\n",
    "shop/cli.py": "import argparse\n\nfrom shop.api import routes\nfrom shop.db import session\n",
    "shop/utils/__init__.py": "",
    "shop/utils/strings.py": "def slug(s: str) -> str:\n    return s.lower().replace(' ', '-')\n",
    "tests/test_orders.py": (
        "from shop.services import orders\nfrom shop.models.order import Order\n"
    ),
    "tests/test_pricing.py": "from shop.services.pricing import price\n",
}

_TS_MODULES: dict[str, str] = {
    "web/tsconfig.json": (
        '{"compilerOptions": {"baseUrl": ".", "paths": {"@/*": ["src/*"]}, '
        '"module": "esnext", "jsx": "react-jsx"}, "include": ["src"]}\n'
    ),
    "web/src/index.tsx": (
        "import { App } from './App';\nimport './styles';\n\nexport const root = App;\n"
    ),
    "web/src/App.tsx": (
        "import { Cart } from './components/Cart';\nimport { ProductList } from "
        "'./components/ProductList';\nimport { useAuth } from '@/hooks/useAuth';\n\n"
        "export function App() { useAuth(); return [Cart, ProductList]; }\n"
    ),
    "web/src/styles.ts": "export const theme = { color: 'teal' };\n",
    "web/src/api/client.ts": "export async function get(url: string) { return fetch(url); }\n",
    "web/src/api/products.ts": (
        "import { get } from './client';\nimport type { Product } from '../types';\n\n"
        "export const list = (): Promise<Product[]> => get('/p').then((r) => r.json());\n"
    ),
    "web/src/api/orders.ts": (
        "import { get } from './client';\nimport type { Order } from '../types';\n\n"
        "export const list = (): Promise<Order[]> => get('/o').then((r) => r.json());\n"
    ),
    "web/src/api/index.ts": "export * from './products';\nexport * as orders from './orders';\n",
    "web/src/types.ts": "export interface Product { id: number }\nexport interface Order "
    "{ id: number }\n",
    "web/src/hooks/useAuth.ts": "import { get } from '../api/client';\n\n"
    "export function useAuth() { return get('/me'); }\n",
    "web/src/hooks/useCart.ts": "import { useAuth } from './useAuth';\nimport * as api from "
    "'../api';\n\nexport function useCart() { useAuth(); return api; }\n",
    "web/src/components/Cart.tsx": (
        "import { useCart } from '../hooks/useCart';\nimport { formatPrice } from "
        "'../utils/format';\n\nexport function Cart() { return [useCart(), formatPrice(1)]; }\n"
    ),
    "web/src/components/ProductList.tsx": (
        "import { list } from '@/api/products';\nimport { formatPrice } from '../utils/format';\n"
        "\nexport function ProductList() { return [list, formatPrice]; }\n"
    ),
    "web/src/components/Checkout.tsx": (
        "const lazy = () => import('./Cart');\nexport function Checkout() { return lazy; }\n"
    ),
    "web/src/utils/format.ts": "export const formatPrice = (n: number) => `$${n}`;\n",
    "web/src/utils/legacy.js": "const fmt = require('./format');\nmodule.exports = fmt;\n",
}


def sample_files() -> dict[str, str]:
    """Every file of the sample repository, repo-relative path → text."""
    files = {"README.md": "# sample shop\n\nA small two-language repository for neo-ray.\n"}
    files.update(_PY_MODULES)
    files.update(_TS_MODULES)
    return files


def write_sample_repo(root: Path) -> Path:
    """Write and commit the sample repository at `root` (created if missing); return it."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in sample_files().items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "neo-ray",
        "GIT_AUTHOR_EMAIL": "demo@neo-ray.invalid",
        "GIT_COMMITTER_NAME": "neo-ray",
        "GIT_COMMITTER_EMAIL": "demo@neo-ray.invalid",
    }
    if not (root / ".git").exists():
        subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, env=env, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, env=env, check=True)
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=root, env=env, check=True, capture_output=True
    )
    if status.stdout.strip():
        subprocess.run(["git", "commit", "-q", "-m", "sample shop"], cwd=root, env=env, check=True)
    return root
