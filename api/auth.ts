import type { RequestHandler } from 'express';
import type { InventoryStore } from '../config/inventory';
import { HttpError } from './errors';

/**
 * Runner bearer auth: `Authorization: Bearer <token>`; the token identifies
 * the runner (compared in constant time). Sets `res.locals.runnerId`.
 */
export function runnerAuth(inventory: InventoryStore): RequestHandler {
  return (req, res, next) => {
    const header = req.get('authorization');
    if (!header || !header.startsWith('Bearer ')) {
      next(new HttpError(401, 'Invalid authorization header'));
      return;
    }
    const runnerId = inventory.inventory.runnerIdForToken(header.slice('Bearer '.length));
    if (!runnerId) {
      next(new HttpError(403, 'Invalid token'));
      return;
    }
    res.locals.runnerId = runnerId;
    next();
  };
}
